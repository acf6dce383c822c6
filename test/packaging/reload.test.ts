// The packages' libvirt reload (build/deb/libvirt-reload.sh) against a real
// libvirtd: Debian's 9.0, started in a namespace of its own (overlay-host.ts:
// private PIDs, so `pidof libvirtd` finds only this one) with a daemon hook
// that records its argv. Without systemd the reload is `kill -HUP` of the
// daemon's PID; libvirtd's own debug log tells whether it reloaded
// ("Calling hook /etc/libvirt/hooks/daemon ... op=reload") and the hook's
// record whether it ran `- reload begin SIGHUP`.
//
// The failure is a real one: the same function run as an unprivileged user,
// whose SIGHUP the kernel refuses. It must say so in one line with a command
// that works, and that command, run as root, must make libvirtd reload.
// Only the exit statuses of a systemctl are stand-ins (a real systemd's
// reload: test/e2e/systemd*.ts): they check which command the line names.
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { LIBVIRTD_CONF, QEMU_CONF } from '../e2e/harness';
import { cannotRun, OverlayHost } from './overlay-host';
import { RELOAD_FAILED as FAILED, shown, shq, top } from './package-kit';

const RELOAD_SH = path.join(top, 'build/deb/libvirt-reload.sh');
const reason = cannotRun(['setpriv']) ?? (fs.existsSync('/usr/sbin/libvirtd') ? null : 'no /usr/sbin/libvirtd');

const HOOK_LOG = '/run/qmw-daemon-hook.log';
const DAEMON_HOOK = `#!/bin/sh\necho "$*" >> ${HOOK_LOG}\n`;

/** Shell: waits up to 20 s for `pattern` (grep -E) in `file`. */
const waitFor = (file: string, pattern: string, count = 1) =>
  `for i in $(seq 200); do [ "$(grep -cE ${shq(pattern)} ${file} 2>/dev/null)" -ge ${count} ] && break; ` +
  `sleep 0.1; done`;

t.test(
  'no systemd: libvirtd reloaded by PID; a refused SIGHUP said with the command that works',
  {
    skip: reason || false,
  },
  async (t) => {
    const o = new OverlayHost('qemu-modwatch-reload');
    t.teardown(() => o.cleanup());
    const fn = fs.readFileSync(RELOAD_SH, 'utf8');
    const script = `
getent group libvirt-qemu >/dev/null || echo 'libvirt-qemu:x:64055:' >> /etc/group
getent passwd libvirt-qemu >/dev/null ||
  echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >> /etc/passwd
rm -rf /run/systemd/system /etc/libvirt/hooks /var/log/libvirt/libvirtd.log
mkdir -p /etc/libvirt/hooks /var/log/libvirt /run/libvirt
rm -f /run/libvirt/libvirt-sock /run/libvirt/libvirt-sock-ro /run/libvirt/libvirt-admin-sock
printf '%s' ${shq(QEMU_CONF)} > /etc/libvirt/qemu.conf
printf '%s' ${shq(LIBVIRTD_CONF)} > /etc/libvirt/libvirtd.conf
printf '%s' ${shq(DAEMON_HOOK)} > /etc/libvirt/hooks/daemon
chmod 0755 /etc/libvirt/hooks/daemon
printf '%s\\n' ${shq(fn)} > /run/reload.sh
chmod 0644 /run/reload.sh
/usr/sbin/libvirtd > /run/libvirtd.out 2>&1 &
pid=$!
${waitFor(HOOK_LOG, '^- start - start$')}
for i in $(seq 200); do [ -S /run/libvirt/libvirt-sock ] && break; sleep 0.1; done
echo "@@PID $pid"
echo "@@HOOK-BEFORE"; cat ${HOOK_LOG}
# As nobody: pidof finds root's libvirtd, the kernel refuses the signal.
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '. /run/reload.sh; qemu_modwatch_reload_libvirt' \\
  2> /run/refused.err
echo "@@RC-REFUSED $?"
echo "@@REFUSED"; cat /run/refused.err
cmd=$(sed -n 's/^qemu-modwatch: could not reload .*; run: //p' /run/refused.err)
echo "@@CMD $cmd"
sh -c "$cmd"
${waitFor(HOOK_LOG, '^- reload begin SIGHUP$')}
echo "@@HOOK-AFTER-CMD"; cat ${HOOK_LOG}
# As root, as the maintainer scripts run it: it reloads, silently.
sh -c '. /run/reload.sh; qemu_modwatch_reload_libvirt' 2> /run/root.err
echo "@@RC-ROOT $?"
${waitFor(HOOK_LOG, '^- reload begin SIGHUP$', 2)}
echo "@@ROOT-ERR"; cat /run/root.err
echo "@@HOOK-END"; cat ${HOOK_LOG}
echo "@@LOG"; grep -E 'Calling hook /etc/libvirt/hooks/daemon' /var/log/libvirt/libvirtd.log
echo "@@END"
kill -TERM "$pid"; wait "$pid"
`;
    const r = o.run(script, { timeout: 120_000 });
    const section = (name: string) => {
      const m = new RegExp(`^@@${name}\\n([\\s\\S]*?)(?=^@@)`, 'm').exec(r.stdout);
      return (m?.[1] ?? '').split('\n').filter(Boolean);
    };
    const pid = /^@@PID (\d+)$/m.exec(r.stdout)?.[1];
    if (!t.ok(pid, 'libvirtd started', shown(r))) return;
    t.same(section('HOOK-BEFORE'), ['- start - start'], 'libvirtd ran the daemon hook at its start', shown(r));

    t.match(r.stdout, /^@@RC-REFUSED 0$/m, 'a refused reload does not fail (no package transaction may)');
    const refused = section('REFUSED');
    t.equal(refused.length, 1, 'one line on stderr', { refused });
    const m = FAILED.exec(refused[0] ?? '');
    if (t.ok(m, `in the documented form: ${refused[0]}`)) {
      t.equal(m![1], `libvirtd (pid ${pid})`, 'it names the daemon and its PID');
      t.equal(m![3], "qemu-modwatch's hooks are not active in it until it reloads", 'and what that means');
      t.equal(m![4], `kill -HUP ${pid}`, 'and the command to run');
    }
    t.same(section('HOOK-AFTER-CMD'), ['- start - start', '- reload begin SIGHUP'], 'the command reloaded libvirtd');

    t.match(r.stdout, /^@@RC-ROOT 0$/m, 'as root it succeeds');
    t.same(section('ROOT-ERR'), [], 'and says nothing');
    t.same(
      section('HOOK-END'),
      ['- start - start', '- reload begin SIGHUP', '- reload begin SIGHUP'],
      'and libvirtd reloaded once more: nothing else reached it',
    );
    const calls = section('LOG');
    t.equal(calls.filter((l) => / op=start /.test(l)).length, 1, "libvirtd's own log: the hook at its start", {
      calls,
    });
    t.equal(calls.filter((l) => / op=reload /.test(l)).length, 2, 'and at its two reloads', { calls });
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
          "qemu-modwatch's hooks are not active in it until it reloads; run: " +
          'systemctl kill --signal=HUP --kill-whom=main libvirtd.service',
      },
      {
        status: 1,
        help: '     --kill-who=WHO      Who to send signal to',
        want:
          'qemu-modwatch: could not reload libvirtd (systemctl reload libvirtd.service exited with status 1): ' +
          "qemu-modwatch's hooks are not active in it until it reloads; run: " +
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
