import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { inCI } from '../fixtures/ci';
import { domainXml } from '../fixtures/hooks';
import { cannotRun } from './overlay-host';
import { OverlayRoot } from './overlay-root';
import { buildDummyDeb, DUMMY, EXE, NODE_FLOOR, sha256, shown, STATE, STATE_DIR, top, version } from './package-kit';

// The node .deb on Debian 12 as Debian ships it: in a chroot of an overlay
// of the Debian root build/nspawn-root.sh makes (Debian's nodejs 18,
// libvirt 9.0, QEMU 7.2), installed with dpkg -i, its dependency met by
// that root's own nodejs. The installed command, run by that node, must see
// the modules that root's QEMU packages installed, record, run from the
// dispatchers as libvirt runs them without a byte on stdout, notice a
// module change, and go without a trace on purge.

const ROOT_LINK = path.join(top, '.stacks/nspawn-bookworm-debian');
const SBIN = '/usr/sbin/qemu-modwatch';
const EMULATOR = '/usr/bin/qemu-system-x86_64';
/** Libvirt's hook environment (REFERENCE.md section 1). */
const HOOK_ENV = 'env -i LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root USER=root LOGNAME=root';
/** What dpkg keeps for itself; anything else left after the purge is a leftover. */
const BOOKKEEPING = [/^\/var\/lib\/dpkg\//, /^\/var\/log\//, /^\/var\/cache\/(man|debconf|ldconfig)\//];

function skipReason(): string | null {
  const r = cannotRun(['chroot', 'dpkg-deb', 'dpkg-architecture']);
  if (r) return r;
  if (!fs.existsSync(path.join(top, 'dist/qemu-modwatch.cjs')))
    return 'dist/qemu-modwatch.cjs is missing: npm run build';
  if (!fs.existsSync(path.join(ROOT_LINK, '.complete')))
    return `${path.relative(top, ROOT_LINK)} is missing: bash build/nspawn-root.sh debian`;
  return null;
}

const reason = skipReason();
if (reason) {
  if (inCI()) t.fail(`the Debian-node test cannot run although CI is set: ${reason}`);
  else t.comment(`Debian-node test skipped: ${reason}`);
}

const multiarch = spawnSync('dpkg-architecture', ['-qDEB_HOST_MULTIARCH'], { encoding: 'utf8' }).stdout?.trim();
const MODDIR = `/usr/lib/${multiarch}/qemu`;

t.test("the node .deb under Debian 12's own nodejs", { skip: reason || false }, async (t) => {
  const o = new OverlayRoot(fs.realpathSync(ROOT_LINK), 'qemu-modwatch-debian-node');
  t.teardown(() => o.cleanup());
  const rootDpkg = fs.readFileSync(path.join(o.root, 'var/lib/dpkg/status'), 'utf8');

  const b = spawnSync(
    process.execPath,
    [path.join(top, 'build/package-deb.mjs'), '--kind', 'node', '--out', o.mnt, '--fast'],
    { encoding: 'utf8', timeout: 120_000 },
  );
  t.equal(b.status, 0, `package-deb.mjs --kind node exits 0\n${b.stderr}`);
  const deb = `/mnt/qemu-modwatch_${version}_all.deb`;
  t.equal(b.stdout.trim(), path.join(o.mnt, path.basename(deb)), 'the node .deb was built');
  fs.writeFileSync(path.join(o.mnt, 'domain.xml'), domainXml('guest1', EMULATOR));
  const dummy = buildDummyDeb(
    path.join(o.mnt, 'dummy'),
    MODDIR,
    fs.readFileSync(path.join(o.root, MODDIR, 'hw-usb-host.so')),
    path.join(o.mnt, `${DUMMY}.deb`),
  );
  if (dummy.status !== 0) throw new Error(`dummy package: ${dummy.stderr}`);

  // 1. Install: dpkg resolves Depends: nodejs from the root's own nodejs.
  const inst = o.run(`
node --version
dpkg-query -W -f='@@NODEJS \${Version}\\n' nodejs
dpkg -i ${deb}; echo "@@RC $?"
dpkg --audit; echo "@@AUDIT $?"
dpkg-query -W -f='@@STATUS \${Status} \${Architecture}\\n' qemu-modwatch
head -n 1 ${EXE}`);
  t.match(inst.stdout, /^v18\.\d+\.\d+$/m, "the root's node is Debian 12's Node.js 18", shown(inst));
  const nodejs = /^@@NODEJS (.*)$/m.exec(inst.stdout)?.[1] ?? '';
  t.equal(spawnSync('dpkg', ['--compare-versions', nodejs, 'ge', NODE_FLOOR]).status, 0, `${nodejs} >= ${NODE_FLOOR}`);
  t.match(inst.stdout, /^@@RC 0$/m, 'dpkg -i succeeds', shown(inst));
  t.notMatch(inst.stderr, /dependency problems|depends on|warning/i, 'dpkg does not complain', shown(inst));
  t.match(inst.stdout, /^Setting up qemu-modwatch /m, 'configured');
  t.match(inst.stdout, /qemu-modwatch refresh: /, 'postinst ran refresh under node 18');
  t.match(inst.stdout, /^@@AUDIT 0$/m, 'dpkg --audit finds nothing half-installed');
  t.match(inst.stdout, /^@@STATUS install ok installed all$/m);
  t.match(inst.stdout, /^#!\/usr\/bin\/node$/m, 'the executable is run by the distro node');

  // 2. The command: --version, and a check whose module list is what the
  // root's QEMU packages installed, as dpkg's database of the root says.
  const run = o.run(`
${HOOK_ENV} ${SBIN} --version; echo "@@VERSION $?"
${SBIN} --check --json > /tmp/check.json; echo "@@CHECK $?"
echo "@@JSON $(tr -d '\\n' < /tmp/check.json)"
dpkg -S '${MODDIR}/*.so' | sed 's/^/@@OWNED /'`);
  t.match(run.stdout, new RegExp(`^qemu-modwatch ${version.replace(/[.]/g, '\\.')}$`, 'm'), '--version', shown(run));
  t.match(run.stdout, /^@@VERSION 0$/m);
  t.equal(run.stderr, '', 'node 18 prints no warning');
  t.match(run.stdout, /^@@CHECK 0$/m, '--check exits 0 (nothing wrong)', shown(run));
  const report = JSON.parse(/^@@JSON (.*)$/m.exec(run.stdout)?.[1] ?? 'null') as {
    status: string;
    moduleDirs: { path: string; modules: { name: string; refused: boolean }[] }[];
  } | null;
  const owned = [...run.stdout.matchAll(/^@@OWNED \S+: (\S+)$/gm)].map((m) => path.posix.basename(m[1]!)).sort();
  t.ok(owned.length >= 20, `the root's QEMU packages installed ${owned.length} modules`);
  const seen = report?.moduleDirs.find((d) => d.path === MODDIR)?.modules ?? [];
  t.same(seen.map((m) => m.name).sort(), owned, "the check lists exactly the modules dpkg says QEMU's packages own");
  t.equal(report?.status, 'OK', 'status OK');
  t.same(
    seen.filter((m) => m.refused).map((m) => m.name),
    [],
    'no module refused: the stamps match the emulator',
  );

  // 3. refresh, then the dispatchers as libvirt runs them: its argv, the
  // domain XML on stdin, its bare environment. Not a byte on stdout.
  const hooks = o.run(`
${HOOK_ENV} ${SBIN} refresh >/dev/null; echo "@@REFRESH $?"
${HOOK_ENV} /etc/libvirt/hooks/daemon.d/50-qemu-modwatch - start - start </dev/null >/tmp/out1; echo "@@DAEMON $?"
echo "@@OUT1 $(wc -c < /tmp/out1)"
cp ${MODDIR}/hw-usb-host.so ${MODDIR}/hw-qmw-by-hand.so
${HOOK_ENV} /etc/libvirt/hooks/qemu.d/50-qemu-modwatch guest1 prepare begin - </mnt/domain.xml >/tmp/out2
echo "@@PREPARE $?"
echo "@@OUT2 $(wc -c < /tmp/out2)"
echo "@@STATE $(tr -d '\\n' < ${STATE})"
rm ${MODDIR}/hw-qmw-by-hand.so
${SBIN} accept >/dev/null`);
  t.match(hooks.stdout, /^@@REFRESH 0$/m, 'refresh exits 0', shown(hooks));
  t.match(hooks.stdout, /^@@DAEMON 0$/m, 'the daemon hook exits 0');
  t.match(hooks.stdout, /^@@OUT1 0$/m, 'the daemon hook prints nothing on stdout');
  t.match(hooks.stdout, /^@@PREPARE 0$/m, 'the qemu prepare hook lets the guest start');
  t.match(hooks.stdout, /^@@OUT2 0$/m, 'the qemu hook prints nothing on stdout');
  const state = JSON.parse(/^@@STATE (.*)$/m.exec(hooks.stdout)?.[1] ?? 'null') as {
    lastAction?: { trigger: string; summary: string };
  } | null;
  t.equal(state?.lastAction?.trigger, 'hook qemu prepare', 'the qemu hook ran the full check (the fast path saw it)');
  t.match(state?.lastAction?.summary ?? '', /added hw-qmw-by-hand\.so/, 'and it noticed the module copied in by hand');

  // 4. A module package: dpkg's file trigger runs refresh under node 18.
  const trig = o.run(`dpkg -i /mnt/${DUMMY}.deb; echo "@@RC $?"; echo "@@STATE $(tr -d '\\n' < ${STATE})"`);
  t.match(trig.stdout, /^@@RC 0$/m, 'the module package installs', shown(trig));
  t.match(trig.stdout, /^Processing triggers for qemu-modwatch /m, 'the file trigger fires');
  t.match(/^@@STATE (.*)$/m.exec(trig.stdout)?.[1] ?? '', /"name":"hw-qmw-test-dummy\.so"/, 'the baseline has it');
  const untrig = o.run(`dpkg --purge ${DUMMY}; echo "@@RC $?"`);
  t.match(untrig.stdout, /^@@RC 0$/m, 'the module package purges', shown(untrig));
  t.match(untrig.stdout, /^Processing triggers for qemu-modwatch /m, 'the trigger fires on removal too');

  // 5. Purge: nothing of it left in the root.
  const purge = o.run(`
dpkg --purge qemu-modwatch; echo "@@RC $?"
dpkg-query -W qemu-modwatch >/dev/null 2>&1; echo "@@QUERY $?"
for p in ${EXE} ${SBIN} ${STATE_DIR} /etc/qemu-modwatch.conf /etc/libvirt/hooks/qemu.d/50-qemu-modwatch; do
  { [ -e "$p" ] || [ -L "$p" ]; } && echo "@@LEFT $p"
done
grep -rl qemu-modwatch /var/lib/dpkg/status /var/lib/dpkg/triggers/ | sed 's/^/@@MENTIONS /'`);
  t.match(purge.stdout, /^@@RC 0$/m, 'dpkg --purge succeeds', shown(purge));
  t.match(purge.stdout, /^@@QUERY 1$/m, 'dpkg no longer knows the package');
  t.same(purge.stdout.match(/^@@(LEFT|MENTIONS) .*$/gm) ?? [], [], "no file, no state, no mention in dpkg's records");
  // The nudge (chmod to its own mode: a new ctime) copied the emulators up, unchanged.
  const same = (p: string) => {
    const [a, b] = [path.join(o.root, p), path.join(o.upper, p)].map((f) => fs.statSync(f));
    return (
      a!.mode === b!.mode &&
      sha256(fs.readFileSync(path.join(o.root, p))) === sha256(fs.readFileSync(path.join(o.upper, p)))
    );
  };
  const changed = o.changed().filter((p) => !BOOKKEEPING.some((re) => re.test(p)));
  const nudged = changed.filter((p) => /\/qemu-system-[^/]+$/.test(p) && same(p));
  t.ok(nudged.includes(EMULATOR), 'the emulator was nudged, its content and mode unchanged', { nudged });
  t.same(
    changed.filter((p) => !nudged.includes(p)),
    [],
    'nothing else changed in the root (the overlay upper dir)',
  );
  t.equal(
    fs.readFileSync(path.join(o.root, 'var/lib/dpkg/status'), 'utf8'),
    rootDpkg,
    'the root itself was never written',
  );
});
