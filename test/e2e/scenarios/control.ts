// Control runs WITHOUT any hook, on one stack (stacks.ts): what its libvirt
// does on its own. The hook tests compare against these baselines.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Test } from 'tap';
import { CACHE_DIR, MODULE_DIR, QEMU, e2eSkip, timeDomainStart, timed, reprobeSummary, useEnv } from '../harness';
import { QXL } from '../modwatch';
import { onStack, stackSkip, type Stack } from '../stacks';

/** <qemumoddirmtime> of a capabilities cache file (whole seconds), or null. */
function cachedModDirMtime(hostFile: string): number | null {
  const head = fs.readFileSync(hostFile, 'utf8').slice(0, 2000);
  const m = /<qemumoddirmtime>(\d+)<\/qemumoddirmtime>/.exec(head);
  return m?.[1] ? Number(m[1]) : null;
}

function mtimeNs(p: string): bigint {
  return fs.statSync(p, { bigint: true }).mtimeNs;
}

/** The controls on `stack`, as subtests of t. */
export function controlScenarios(t: Test, stack: Stack): void {
  const skip = e2eSkip(t) || stackSkip(t, stack);
  const scenario = { skip, timeout: 180_000 };
  const world = (label: string) => onStack(stack, { label });

  t.test(`the stack: ${stack.title}`, scenario, async (t) => {
    const env = await useEnv(t, world('modwatch-control-stack'));
    const v = (await env.virsh('version')).stdout;
    t.match(
      v,
      new RegExp(`Using library: libvirt ${stack.libvirt.replaceAll('.', '\\.')}\\n`),
      `virsh is libvirt ${stack.libvirt}`,
    );
    t.match(
      v,
      new RegExp(`Using API: QEMU ${stack.libvirt.replaceAll('.', '\\.')}\\n`),
      `so is the daemon's QEMU driver`,
    );
    t.match(
      v,
      new RegExp(`Running hypervisor: QEMU ${stack.qemu.replaceAll('.', '\\.')}\\.`),
      `the daemon drives QEMU ${stack.qemu}`,
    );
    const qemu = (await env.exec([QEMU, '--version'])).stdout;
    t.match(
      qemu,
      new RegExp(`^QEMU emulator version ${stack.qemu.replaceAll('.', '\\.')}\\b`),
      `${QEMU} is QEMU ${stack.qemu}: ${qemu.split('\n')[0]}`,
    );
    t.same(
      env
        .processes()
        .map((p) => p.comm)
        .sort(),
      env.daemons,
      `the daemons running: ${env.daemons.join(', ')}`,
    );
  });

  t.test('removed module + module dir mtime reset: libvirt keeps stale capabilities', scenario, async (t) => {
    const env = await useEnv(t, world('modwatch-control-stale'));
    t.comment(
      `virtlogd start ${env.timings.virtlogdStart} ms, ${env.qemuDaemon} start ${env.timings.libvirtdStarts[0]} ms`,
    );
    const modDirHost = env.hostPath(MODULE_DIR);
    const qxlHost = env.hostPath(path.posix.join(MODULE_DIR, QXL));
    t.ok(fs.existsSync(qxlHost), `${QXL} present in the private module dir`);

    const cold = await timed(() => env.domcapsVideoModels());
    t.comment(`cold probe (empty cache, domcapabilities) ${cold.ms} ms`);
    t.ok(cold.value.includes('qxl'), `qxl among video models: ${cold.value.join(' ')}`);
    const mem = await timed(() => env.domcapsVideoModels());
    t.comment(`warm lookup (in memory) ${mem.ms} ms`);
    t.same(mem.value, cold.value, 'same models on the second lookup');

    const before = env.cacheFiles();
    t.equal(before.length, 1, 'one capabilities cache file');
    const entry = before[0];
    if (!entry) return;
    t.equal(entry.path, path.posix.join(CACHE_DIR, entry.name));
    const dirSec = Number(mtimeNs(modDirHost) / 1_000_000_000n);
    t.equal(cachedModDirMtime(entry.hostPath), dirSec, '<qemumoddirmtime> is the module dir mtime in seconds');

    // Remove the module with the daemon stopped and put the dir mtime back.
    await env.stopDaemon();
    const dirMtimeBefore = mtimeNs(modDirHost);
    const restore = env.saveTimes(MODULE_DIR);
    fs.renameSync(qxlHost, path.join(env.dir, `${QXL}.removed`));
    t.not(mtimeNs(modDirHost), dirMtimeBefore, 'removing the module changed the dir mtime');
    restore();
    t.equal(mtimeNs(modDirHost), dirMtimeBefore, 'dir mtime reset to the exact previous value');
    t.notOk(fs.existsSync(qxlHost), `${QXL} removed`);

    const restartMs = await env.startDaemon();
    const stale = await timed(() => env.domcapsVideoModels());
    t.comment(`${env.qemuDaemon} restart ${restartMs} ms, warm lookup (cache file loaded from disk) ${stale.ms} ms`);
    // A re-probe for any reason (a changed host cpuid, KVM) would make the
    // answer below say nothing about the module: libvirt's own log decides.
    t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind across the restart');
    t.ok(stale.value.includes('qxl'), `libvirt ${stack.libvirt} still lists qxl although ${QXL} is gone (stale cache)`);
    t.same(env.cacheFiles(), before, 'cache file untouched (same inode, mtime, size): no re-probe');

    // Positive control: a module dir mtime change is noticed by the running
    // daemon on the next lookup (re-probe, file rewritten, qxl gone).
    const now = new Date();
    fs.utimesSync(modDirHost, now, now);
    const reprobe = await timed(() => env.domcapsVideoModels());
    t.comment(`re-probe after touching the module dir (running daemon) ${reprobe.ms} ms`);
    t.same(
      reprobeSummary(env),
      [`${QEMU}: modules directory`],
      "libvirt's reason for the one re-probe: the module dir's mtime",
    );
    t.comment(`libvirt's words: ${env.reprobes().at(-1)?.text ?? '(not logged)'}`);
    t.notOk(reprobe.value.includes('qxl'), `qxl gone after the re-probe: ${reprobe.value.join(' ')}`);
    const rewritten = env.cacheFiles();
    t.equal(rewritten.length, 1, 'still one cache file');
    t.not(rewritten[0]?.mtimeNs, entry.mtimeNs, 'cache file rewritten');
  });

  t.test('the world has no KVM: libvirt probes with TCG only, whatever the host has', scenario, async (t) => {
    const env = await useEnv(t, world('modwatch-control-nokvm'));
    const dev = await env.exec(['sh', '-c', '[ -e /dev/kvm ] && echo "@@KVM yes" || echo "@@KVM no"']);
    t.match(
      dev.stdout,
      /^@@KVM no$/m,
      `no /dev/kvm in the world (host: ${fs.existsSync('/dev/kvm') ? 'has one' : 'has none'})`,
    );
    const caps = (await env.virsh('capabilities')).stdout;
    t.match(caps, /<domain type='qemu'/, "virsh capabilities offers domain type 'qemu'");
    t.notMatch(caps, /<domain type='kvm'/, "and not 'kvm'");
    const kvm = await env.virshAllowFail(
      'domcapabilities',
      '--emulatorbin',
      QEMU,
      '--arch',
      'x86_64',
      '--machine',
      'pc',
      '--virttype',
      'kvm',
    );
    t.not(kvm.code, 0, `domcapabilities for KVM is refused: ${kvm.stderr.trim()}`);
    await env.domcapsVideoModels();
    await env.restartDaemon();
    await env.domcapsVideoModels();
    t.same(reprobeSummary(env), [], 'a restart with nothing changed: no re-probe');
    t.same(
      (await env.exec(['sh', '-c', 'stat -c %t:%T /dev/null; readlink /dev/ptmx'])).stdout.trim().split('\n'),
      ['1:3', 'pts/ptmx'],
      'the world has /dev/null and a pty multiplexer of its own',
    );
  });

  t.test('tiny TCG guest: define, start, running, destroy', scenario, async (t) => {
    const env = await useEnv(t, world('modwatch-control-guest'));
    t.comment(`${env.qemuDaemon} start ${env.timings.libvirtdStarts[0]} ms`);
    t.same(env.cacheFiles(), [], 'capabilities cache starts empty');

    const defineMs = await env.defineDomain('mw-tiny');
    t.comment(`virsh define (cold cache: includes the probe) ${defineMs} ms`);
    t.equal(env.cacheFiles().length, 1, 'define probed and wrote the cache file');

    const startMs = await timeDomainStart(env, 'mw-tiny');
    t.comment(`virsh start -> running (first start) ${startMs} ms`);
    t.equal(await env.domstate('mw-tiny'), 'running', 'domstate running');
    const pids = env.qemuPids();
    t.equal(pids.length, 1, 'one QEMU process, in the env namespace');
    const pid = pids[0] ?? 0;
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    t.equal(cmdline[0], QEMU, 'runs the system emulator');
    const accel = cmdline.indexOf('-accel');
    t.ok((accel >= 0 && cmdline[accel + 1]?.startsWith('tcg')) || cmdline.some((a) => /accel=tcg/.test(a)), 'uses TCG');

    const d1 = await timed(() => env.virsh('destroy', 'mw-tiny'));
    t.comment(`virsh destroy ${d1.ms} ms`);
    t.equal(await env.domstate('mw-tiny'), 'shut off', 'domstate shut off');
    t.same(env.qemuPids(), [], 'QEMU gone');

    const warmMs = await timeDomainStart(env, 'mw-tiny');
    t.comment(`virsh start -> running (second start, warm) ${warmMs} ms`);
    const d2 = await timed(() => env.virsh('destroy', 'mw-tiny'));
    t.comment(`virsh destroy ${d2.ms} ms`);
    t.same(
      env
        .processes()
        .map((p) => p.comm)
        .sort(),
      env.daemons,
      'only the daemons left in the namespace',
    );
  });
}
