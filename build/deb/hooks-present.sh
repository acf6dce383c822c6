# Shared by the .deb's maintainer scripts and the RPM's scriptlets (both
# embed this at build time, as libvirt-reload.sh).
#
# Since when qemu-modwatch's hooks have been there without a break (README,
# "State"): an upgrade replaces the dispatchers (new files, new ctime) while
# libvirt keeps running ours, so before the package's files replace them
# qemu_modwatch_keep_hooks_present records when those there then arrived,
# the newest ctime of them, unless a usable record is there. With none of
# ours there, a record left is not of these hooks and goes: so does it in
# qemu_modwatch_forget_hooks_present, once the package's hooks are removed,
# unless one of ours is still there. Argument: the root (DPKG_ROOT), or none.
# Never fails the transaction: a record that cannot be written is said on
# stderr in one line.

# The newest ctime of our dispatchers, as stat prints it (to the ns; whole
# seconds where stat has no %.9Z), or nothing when none is there. Ours: an
# executable file of the hooks libvirt runs that says qemu-modwatch at its
# top; a package manager's copy (the dispatchers' own list) is not.
qemu_modwatch_hooks_time() {
  qmw_newest=
  qmw_newest_n=
  for qmw_f in "${1:-}"/etc/libvirt/hooks/qemu "${1:-}"/etc/libvirt/hooks/daemon \
    "${1:-}"/etc/libvirt/hooks/qemu.d/* "${1:-}"/etc/libvirt/hooks/daemon.d/*; do
    case ${qmw_f##*/} in
      *.dpkg-* | *.rpmnew | *.rpmsave | *.rpmorig | *.ucf-* | *~) continue ;;
    esac
    [ -f "$qmw_f" ] && [ -x "$qmw_f" ] || continue
    head -c 512 "$qmw_f" 2>/dev/null | grep -q qemu-modwatch || continue
    qmw_t=$(stat -c %.9Z "$qmw_f" 2>/dev/null)
    case $qmw_t in
      *[!0-9.]* | '' | .* | *. | *.*.*) qmw_t=$(stat -c %Z "$qmw_f" 2>/dev/null) ;;
    esac
    case $qmw_t in
      *[!0-9.]* | '') continue ;;
    esac
    # The same format for every file: without the point, integers to compare.
    qmw_n=$(printf '%s' "$qmw_t" | tr -d .)
    if [ -z "$qmw_newest" ] || [ "$qmw_n" -gt "$qmw_newest_n" ]; then
      qmw_newest=$qmw_t
      qmw_newest_n=$qmw_n
    fi
  done
  [ -z "$qmw_newest" ] || printf '%s\n' "$qmw_newest"
}

qemu_modwatch_keep_hooks_present() {
  qmw_rec=${1:-}/var/lib/qemu-modwatch/hooks-present-since
  qmw_t=$(qemu_modwatch_hooks_time "${1:-}")
  if [ -z "$qmw_t" ]; then
    rm -f "$qmw_rec" 2>/dev/null
    return 0
  fi
  # A usable record is older than these files: it stays. Its format is the one check reads.
  qmw_old=$(cat "$qmw_rec" 2>/dev/null)
  case $qmw_old in
    *[!0-9.]* | '') ;;
    *) printf '%s\n' "$qmw_old" | grep -Eqx '[0-9]{1,12}(\.[0-9]{1,9})?' && return 0 ;;
  esac
  if mkdir -p "${qmw_rec%/*}" 2>/dev/null && printf '%s\n' "$qmw_t" >"$qmw_rec.tmp" 2>/dev/null &&
    mv -f "$qmw_rec.tmp" "$qmw_rec" 2>/dev/null; then
    return 0
  fi
  rm -f "$qmw_rec.tmp" 2>/dev/null
  echo "qemu-modwatch: could not record since when its hooks are there in $qmw_rec: until libvirt reloads," \
    "check may say hooks-not-loaded of a daemon that runs them" >&2
  return 0
}

qemu_modwatch_forget_hooks_present() {
  [ -n "$(qemu_modwatch_hooks_time "${1:-}")" ] ||
    rm -f "${1:-}/var/lib/qemu-modwatch/hooks-present-since" 2>/dev/null
  return 0
}
