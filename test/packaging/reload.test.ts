// The packages' libvirt reload (build/deb/libvirt-reload.sh) against a real
// libvirtd: Debian's 9.0, started in a namespace of its own (overlay-host.ts:
// private PIDs, so `pidof libvirtd` finds only this test's) with a daemon
// hook in daemon.d/, where the package puts its own, that logs its argv
// and, as ours does first, rewrites the record of its daemon
// (stateFiles().daemonHook: the name the executable writes). Without
// systemd the reload is `kill -HUP` of the daemon's PID; libvirtd's own
// debug log tells whether it reloaded ("Calling hook
// /etc/libvirt/hooks/daemon.d/... op=reload") and the hook's log whether it
// ran `- reload begin SIGHUP`.
//
// A second libvirtd stands for a container's: the same PIDs (pidof lists
// it), its own mount namespace with its own hooks directory, run state and
// logs. Its debug log and its hook's log, read through /proc/PID/root, say
// that nothing reached it.
//
// What the failed reload's line says that means is checked against
// libvirtd's own behaviour: a guest start after our drop-in was placed
// runs it at once when another QEMU hook was there at the daemon's start,
// and not without one.
//
// The failure is a real one: the same function run as an unprivileged user,
// whose SIGHUP the kernel refuses (given CAP_SYS_PTRACE, as root has it, to
// see which hooks directory each daemon reads). It must say so in one line
// with a command that works, and that command, run as root, must make
// libvirtd reload. Only the exit statuses of a systemctl are stand-ins (a
// real systemd's reload: test/e2e/deb-systemd.test.ts): they check which
// command the line names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { makePaths, stateFiles } from '../../src/host/paths';
import { LIBVIRTD_CONF, QEMU_CONF, domainXml } from '../e2e/harness';
import { cannotRun, OverlayHost } from './overlay-host';
import { RELOAD_FAILED as FAILED, shown, shq, top } from './package-kit';

const RELOAD_SH = path.join(top, 'build/deb/libvirt-reload.sh');
const reason = cannotRun(['setpriv']) ?? (fs.existsSync('/usr/sbin/libvirtd') ? null : 'no /usr/sbin/libvirtd');

const HOOK_LOG = '/run/qmw-daemon-hook.log';
/** The record our daemon hook keeps of libvirtd's runs, as the executable names it. */
const RECORD = stateFiles(makePaths({ uid: 0, env: {} })).daemonHook('libvirtd');
/** While it exists, the stand-in hook records nothing: a daemon whose hook never reports back. */
const NO_RECORD = '/run/qmw-no-record';
/** On a reload it takes 1 s, as the executable's start can: a return before that has not waited for it. */
const DAEMON_HOOK = `#!/bin/sh
[ "$2" = reload ] && sleep 1
echo "$*" >> ${HOOK_LOG}
[ -e ${NO_RECORD} ] && exit 0
mkdir -p ${path.dirname(RECORD)}
printf '{"pid":%s,"at":"%s"}\\n' "$PPID" "$(date +%s.%N)" > ${RECORD}.tmp && mv ${RECORD}.tmp ${RECORD}
`;
/** The other daemon's hook log: in /var, which both mount namespaces share. */
const OTHER_LOG = '/var/log/qmw-other-hook.log';
const OTHER_HOOK = `#!/bin/sh\necho "$*" >> ${OTHER_LOG}\n`;
/** A sleep without fractions, as an old busybox's. */
const WHOLE_SLEEP = `#!/bin/sh
case $1 in *[!0-9]*) echo "sleep: invalid number '$1'" >&2; exit 1 ;; esac
exec /bin/sleep "$@"
`;

const MEANING = {
  plain: "qemu-modwatch's hooks are not active in it until it reloads",
  daemonHook: "qemu-modwatch's QEMU hook is not active in it until it reloads",
  qemuHook:
    "qemu-modwatch's QEMU hook is active in it only if a QEMU hook was there when it started or last reloaded; " +
    'qemu-modwatch status tells',
};

/** Shell: waits up to 20 s for `pattern` (grep -E) in `file`. */
const waitFor = (file: string, pattern: string, count = 1) =>
  `for i in $(seq 200); do [ "$(grep -cE ${shq(pattern)} ${file} 2>/dev/null)" -ge ${count} ] && break; ` +
  `sleep 0.1; done`;

/** Shell: runs the reload as root, PATH first searching dir if given, timed: @@RC-name, @@MS-name, @@ERR-name. */
const timedReload = (name: string, dir = '') =>
  `t0=$(date +%s%N)
PATH=${dir ? `${dir}:` : ''}$PATH sh -c '. /run/reload.sh; qemu_modwatch_reload_libvirt' 2> /run/${name}.err
echo "@@RC-${name} $?"
echo "@@MS-${name} $(( ($(date +%s%N) - t0) / 1000000 ))"
echo "@@HOOK-${name}"; cat ${HOOK_LOG}
echo "@@ERR-${name}"; cat /run/${name}.err`;

t.test(
  "no systemd: libvirtd reloaded by PID, a container's left alone; the reload awaited, bounded; a refused " +
    'SIGHUP said with the command that works',
  {
    skip: reason || false,
  },
  async (t) => {
    const o = new OverlayHost('qemu-modwatch-reload');
    t.teardown(() => o.cleanup());
    const fn = fs.readFileSync(RELOAD_SH, 'utf8');
    const refuse = (name: string) =>
      `setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=+sys_ptrace --ambient-caps=+sys_ptrace \\
  sh -c '. /run/reload.sh; qemu_modwatch_reload_libvirt' 2> /run/${name}.err
echo "@@RC-${name} $?"
echo "@@ERR-${name}"; cat /run/${name}.err`;
    const script = `
getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >> /etc/group
getent passwd libvirt-qemu >/dev/null ||
  echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >> /etc/passwd
rm -rf /run/systemd/system /etc/libvirt/hooks /var/log/libvirt/libvirtd.log ${path.dirname(RECORD)} ${OTHER_LOG}
mkdir -p /etc/libvirt/hooks/daemon.d /var/log/libvirt /run/libvirt /run/whole-sleep
rm -f /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro /run/libvirt/libvirt-admin-sock
printf '%s' ${shq(QEMU_CONF)} > /etc/libvirt/qemu.conf
printf '%s' ${shq(LIBVIRTD_CONF)} > /etc/libvirt/libvirtd.conf
printf '%s' ${shq(DAEMON_HOOK)} > /etc/libvirt/hooks/daemon.d/50-qemu-modwatch
chmod 0755 /etc/libvirt/hooks/daemon.d/50-qemu-modwatch
printf '%s' ${shq(WHOLE_SLEEP)} > /run/whole-sleep/sleep
chmod 0755 /run/whole-sleep/sleep
printf '%s\\n' ${shq(fn)} > /run/reload.sh
chmod 0644 /run/reload.sh
/usr/sbin/libvirtd > /run/libvirtd.out 2>&1 &
pid=$!
${waitFor(HOOK_LOG, '^- start - start$')}
for i in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
echo "@@PID $pid"
echo "@@HOOK-BEFORE"; cat ${HOOK_LOG}
# A container's libvirtd: its own /run, hooks, logs and libvirt state over the same /etc and /var.
printf '%s' ${shq(OTHER_HOOK)} > /var/tmp/qmw-other-hook
chmod 0755 /var/tmp/qmw-other-hook
unshare --mount --propagation private sh -c '
  for d in /run /etc/libvirt/hooks /var/log/libvirt /var/lib/libvirt /var/cache/libvirt; do
    mount -t tmpfs -o mode=0755 tmpfs "$d" || exit 1
  done
  mkdir -p /run/libvirt
  cp -p /var/tmp/qmw-other-hook /etc/libvirt/hooks/daemon
  exec /usr/sbin/libvirtd' > /var/log/qmw-other.out 2>&1 &
other=$!
${waitFor(OTHER_LOG, '^- start - start$')}
for i in $(seq 200); do [ -S /proc/$other/root/run/libvirt/libvirt-sock ] && break; sleep 0.1; done
echo "@@OTHER $other"
echo "@@PIDOF $(pidof libvirtd | tr ' ' '\\n' | sort -n | tr '\\n' ' ')"
echo "@@IDS $(stat -Lc %d:%i /etc/libvirt/hooks) $(stat -Lc %d:%i /proc/$other/root/etc/libvirt/hooks)"
echo "@@OTHER-OUT"; cat /var/log/qmw-other.out
# As nobody: pidof finds root's libvirtds, the kernel refuses the signal. Then with another daemon
# hook, and with another QEMU hook: what the line says its failure means.
${refuse('refused')}
printf '#!/bin/sh\\nexit 0\\n' > /etc/libvirt/hooks/daemon; chmod 0755 /etc/libvirt/hooks/daemon
${refuse('refused-daemon')}
mkdir -p /etc/libvirt/hooks/qemu.d
printf '#!/bin/sh\\nexit 0\\n' > /etc/libvirt/hooks/qemu.d/10-other; chmod 0755 /etc/libvirt/hooks/qemu.d/10-other
${refuse('refused-qemu')}
rm -rf /etc/libvirt/hooks/daemon /etc/libvirt/hooks/qemu.d
cmd=$(sed -n 's/^qemu-modwatch: could not reload .*; run: //p' /run/refused.err)
echo "@@CMD $cmd"
sh -c "$cmd"
${waitFor(HOOK_LOG, '^- reload begin SIGHUP$')}
echo "@@HOOK-AFTER-CMD"; cat ${HOOK_LOG}
# As root, as the maintainer scripts run it: it reloads, awaits the hook's record, silently.
${timedReload('root')}
# A hook that never reports back: at most 5 s, said in one line; also where sleep has no fractions.
touch ${NO_RECORD}
${timedReload('silent')}
${waitFor(HOOK_LOG, '^- reload begin SIGHUP$', 3)}
${timedReload('whole', '/run/whole-sleep')}
${waitFor(HOOK_LOG, '^- reload begin SIGHUP$', 4)}
echo "@@HOOK-END"; cat ${HOOK_LOG}
echo "@@LOG"; grep -E 'Calling hook /etc/libvirt/hooks/daemon' /var/log/libvirt/libvirtd.log
kill -0 "$other" && echo "@@OTHER-ALIVE"
echo "@@OTHER-HOOK"; cat ${OTHER_LOG}
echo "@@OTHER-LOG"; grep -E 'Calling hook /etc/libvirt/hooks/daemon' /proc/$other/root/var/log/libvirt/libvirtd.log
echo "@@END"
kill -TERM "$pid" "$other"; wait "$pid" "$other"
`;
    const r = o.run(script, { timeout: 180_000 });
    const section = (name: string) => {
      const m = new RegExp(`^@@${name}\\n([\\s\\S]*?)(?=^@@)`, 'm').exec(r.stdout);
      return (m?.[1] ?? '').split('\n').filter(Boolean);
    };
    const value = (name: string) => new RegExp(`^@@${name} (.*)$`, 'm').exec(r.stdout)?.[1];
    const pid = value('PID');
    const other = value('OTHER');
    if (!t.ok(pid, 'libvirtd started', shown(r))) return;
    t.same(section('HOOK-BEFORE'), ['- start - start'], 'libvirtd ran the daemon hook at its start', shown(r));
    if (!t.ok(other, 'the other libvirtd started', shown(r))) return;
    t.comment(`the other libvirtd's stderr: ${section('OTHER-OUT').join(' | ') || 'nothing'}`);
    t.same(
      value('PIDOF')?.trim().split(' '),
      [pid, other].sort((a, b) => Number(a) - Number(b)),
      'pidof lists both',
    );
    const [ours, theirs] = value('IDS')?.split(' ') ?? [];
    t.not(ours, theirs, 'the other sees a hooks directory of its own');

    t.match(r.stdout, /^@@RC-refused 0$/m, 'a refused reload does not fail (no package transaction may)');
    for (const [name, meaning] of [
      ['refused', MEANING.plain],
      ['refused-daemon', MEANING.daemonHook],
      ['refused-qemu', MEANING.qemuHook],
    ] as const) {
      const said = section(`ERR-${name}`);
      t.equal(said.length, 1, `${name}: one line on stderr, of our libvirtd only`, { said });
      const m = FAILED.exec(said[0] ?? '');
      if (t.ok(m, `in the documented form: ${said[0]}`)) {
        t.equal(m![1], `libvirtd (pid ${pid})`, 'it names the daemon and its PID');
        t.equal(m![2], 'SIGHUP not delivered', 'what failed');
        t.equal(m![3], meaning, 'and what that means');
        t.equal(m![4], `kill -HUP ${pid}`, 'and the command to run');
      }
    }
    t.same(section('HOOK-AFTER-CMD'), ['- start - start', '- reload begin SIGHUP'], 'the command reloaded libvirtd');

    t.match(r.stdout, /^@@RC-root 0$/m, 'as root it succeeds');
    t.same(section('ERR-root'), [], 'and says nothing');
    t.same(
      section('HOOK-root'),
      ['- start - start', '- reload begin SIGHUP', '- reload begin SIGHUP'],
      'it returned once libvirtd had run the hook of its reload, which nothing else reached',
    );
    const rootMs = Number(value('MS-root'));
    t.ok(rootMs >= 1000 && rootMs < 5000, `it waited for the hook's 1 s, within the bound: ${rootMs} ms`);

    const waitLine =
      `qemu-modwatch: no run of qemu-modwatch's daemon hook in libvirtd (pid ${pid}) was recorded within 5 s ` +
      'of its reload: it may not have loaded the hooks; qemu-modwatch status tells';
    for (const name of ['silent', 'whole']) {
      const ms = Number(value(`MS-${name}`));
      t.match(r.stdout, new RegExp(`^@@RC-${name} 0$`, 'm'), `${name}: a hook that never reports back: no failure`);
      t.same(section(`ERR-${name}`), [waitLine], 'one line says so');
      t.ok(ms >= 5000 && ms < 7000, `after 5 s, not longer: ${ms} ms`);
    }
    t.same(
      section('HOOK-END'),
      ['- start - start', ...Array<string>(4).fill('- reload begin SIGHUP')],
      'libvirtd reloaded each time: the reload was delivered, only the record did not come',
    );
    const calls = section('LOG');
    t.equal(calls.filter((l) => / op=start /.test(l)).length, 1, "libvirtd's own log: the hook at its start", {
      calls,
    });
    t.equal(calls.filter((l) => / op=reload /.test(l)).length, 4, 'and at its four reloads', { calls });

    t.match(r.stdout, /^@@OTHER-ALIVE$/m, 'the other libvirtd still runs');
    t.same(section('OTHER-HOOK'), ['- start - start'], 'its hook ran at its start, never on a reload');
    const otherCalls = section('OTHER-LOG');
    t.equal(otherCalls.filter((l) => / op=start /.test(l)).length, 1, 'its own log: the hook at its start', {
      otherCalls,
    });
    t.equal(otherCalls.filter((l) => / op=reload /.test(l)).length, 0, 'and no reload', { otherCalls });
  },
);

/** Our QEMU drop-in's stand-in: logs its argv. */
const QEMU_LOG = '/run/qmw-qemu-hook.log';
const QEMU_HOOK = `#!/bin/sh\necho "$*" >> ${QEMU_LOG}\ncat >/dev/null\n`;

t.test(
  "what the failed reload's line says our QEMU hook's state is, against libvirtd's own: not active without " +
    'another QEMU hook at its start, active at once with one',
  {
    skip: reason || (fs.existsSync('/usr/bin/virsh') ? false : 'no /usr/bin/virsh'),
  },
  async (t) => {
    const o = new OverlayHost('qemu-modwatch-reload-meaning');
    t.teardown(() => o.cleanup());
    const fn = fs.readFileSync(RELOAD_SH, 'utf8');
    const ours = '/etc/libvirt/hooks/qemu.d/50-qemu-modwatch';
    // One libvirtd at a time: started, our drop-in placed after its start, a refused reload, a guest started.
    const round = (name: string) => `
rm -f ${QEMU_LOG} ${ours}
/usr/sbin/libvirtd > /run/libvirtd-${name}.out 2>&1 &
pid=$!
for i in $(seq 300); do virsh -q -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
printf '%s' ${shq(QEMU_HOOK)} > ${ours}; chmod 0755 ${ours}
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=+sys_ptrace --ambient-caps=+sys_ptrace \\
  sh -c '. /run/reload.sh; qemu_modwatch_reload_libvirt' 2> /run/${name}.err
echo "@@ERR-${name}"; cat /run/${name}.err
virsh -q -c qemu:///system start g > /run/start-${name}.out 2>&1; echo "@@START-${name} $?"
echo "@@START-OUT-${name}"; cat /run/start-${name}.out
virsh -q -c qemu:///system destroy g >/dev/null 2>&1
echo "@@OURS-${name}"; cat ${QEMU_LOG} 2>/dev/null
kill -TERM "$pid"; wait "$pid"
`;
    const script = `
getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >> /etc/group
getent passwd libvirt-qemu >/dev/null ||
  echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >> /etc/passwd
rm -rf /run/systemd/system /etc/libvirt/hooks /etc/libvirt/qemu/*.xml
mkdir -p /etc/libvirt/hooks/qemu.d /var/log/libvirt /run/libvirt
rm -f /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro /run/libvirt/libvirt-admin-sock
printf '%s' ${shq(QEMU_CONF)} > /etc/libvirt/qemu.conf
printf '%s' ${shq(LIBVIRTD_CONF)} > /etc/libvirt/libvirtd.conf
printf '%s' ${shq(domainXml('g'))} > /run/g.xml
# The guest's console goes through virtlogd.
/usr/sbin/virtlogd > /run/virtlogd.out 2>&1 &
logd=$!
for i in $(seq 200); do [ -S /run/libvirt/virtlogd-sock ] && break; sleep 0.1; done
printf '%s\\n' ${shq(fn)} > /run/reload.sh
chmod 0644 /run/reload.sh
/usr/sbin/libvirtd > /run/libvirtd-define.out 2>&1 &
pid=$!
for i in $(seq 300); do virsh -q -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
virsh -q -c qemu:///system define /run/g.xml >/dev/null; echo "@@DEFINE $?"
kill -TERM "$pid"; wait "$pid"
${round('alone')}
printf '#!/bin/sh\\ncat >/dev/null\\n' > /etc/libvirt/hooks/qemu.d/10-other
chmod 0755 /etc/libvirt/hooks/qemu.d/10-other
${round('other')}
echo "@@END"
kill -TERM "$logd"; wait "$logd"
`;
    const r = o.run(script, { timeout: 180_000 });
    const section = (name: string) => {
      const m = new RegExp(`^@@${name}\\n([\\s\\S]*?)(?=^@@)`, 'm').exec(r.stdout);
      return (m?.[1] ?? '').split('\n').filter(Boolean);
    };
    if (!t.match(r.stdout, /^@@DEFINE 0$/m, 'the guest is defined', shown(r))) return;
    const cases = [
      { name: 'alone', meaning: MEANING.plain, ran: false },
      { name: 'other', meaning: MEANING.qemuHook, ran: true },
    ];
    for (const c of cases) {
      const said = section(`ERR-${c.name}`);
      t.equal(said.length, 1, `${c.name}: the refused reload said in one line: ${said[0]}`, shown(r));
      t.equal(FAILED.exec(said[0] ?? '')?.[3], c.meaning, 'its meaning');
      t.match(r.stdout, new RegExp(`^@@START-${c.name} 0$`, 'm'), 'libvirt started the guest', shown(r));
      const runs = section(`OURS-${c.name}`);
      if (c.ran) t.same(runs.slice(0, 1), ['g prepare begin -'], 'ground truth: libvirtd ran our drop-in at once');
      else t.same(runs, [], 'ground truth: libvirtd ran no drop-in of ours');
    }
  },
);

/** A systemctl whose reload exits with `status`; its --help is the real one's. */
function systemctlStub(dir: string, status: number, help: string): string {
  const file = path.join(dir, 'systemctl');
  fs.writeFileSync(
    file,
    `#!/bin/sh
case " $* " in
  *" --help "*) printf '%s\\n' ${shq(help)} ; exit 0 ;;
  *" is-active "*) [ "$3" = libvirtd.service ] && exit 0; exit 3 ;;
  *" reload "*) exit ${status} ;;
esac
exit 0
`,
    { mode: 0o755 },
  );
  return file;
}

t.test(
  'systemd: the reload is awaited; a failed one names systemctl kill with the option this systemd has',
  {
    skip: reason || false,
  },
  async (t) => {
    const o = new OverlayHost('qemu-modwatch-reload-systemd');
    t.teardown(() => o.cleanup());
    const fn = fs.readFileSync(RELOAD_SH, 'utf8');
    const cases = [
      { status: 0, help: '     --kill-whom=WHOM    Whom to send signal to', want: null },
      {
        status: 1,
        help: '     --kill-whom=WHOM    Whom to send signal to',
        want:
          'qemu-modwatch: could not reload libvirtd (systemctl reload libvirtd.service exited with status 1): ' +
          `${MEANING.plain}; run: ` +
          'systemctl kill --signal=HUP --kill-whom=main libvirtd.service',
      },
      {
        status: 1,
        help: '     --kill-who=WHO      Who to send signal to',
        want:
          'qemu-modwatch: could not reload libvirtd (systemctl reload libvirtd.service exited with status 1): ' +
          `${MEANING.plain}; run: ` +
          'systemctl kill --signal=HUP --kill-who=main libvirtd.service',
      },
    ];
    for (const [i, c] of cases.entries()) {
      const stub = o.scratch(`stub-${i}`);
      systemctlStub(stub, c.status, c.help);
      const r = o.run(
        `mkdir -p /run/systemd/system\n${fn}\nqemu_modwatch_reload_libvirt 2> /run/err; echo "@@RC $?"; cat /run/err`,
        { env: { PATH: `${stub}:/usr/sbin:/usr/bin:/sbin:/bin`, LC_ALL: 'C', HOME: '/root' } },
      );
      t.match(r.stdout, /^@@RC 0$/m, `reload exit ${c.status}: the function succeeds`, shown(r));
      const said = r.stdout.split('\n').filter((l) => l.startsWith('qemu-modwatch:'));
      t.same(said, c.want ? [c.want] : [], c.want ? 'one line naming the command that works' : 'nothing said');
      if (c.want) t.match(c.want, FAILED, 'in the documented form');
    }
    const realHelp = o.run('systemctl --help');
    t.match(realHelp.stdout, /--kill-whom=/, "this host's systemctl has --kill-whom, so the line names it here");
  },
);
