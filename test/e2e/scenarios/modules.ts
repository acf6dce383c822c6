// End-to-end scenarios 1-3 against a real libvirt daemon and real QEMU, on
// one stack (stacks.ts): each one first without the hook (libvirt's own
// behaviour), then with dist/qemu-modwatch and hooks/*.d/50-qemu-modwatch
// installed as in production. libvirt's own answers decide: `virsh
// domcapabilities`, `virsh start`, the capabilities cache files. Scenarios
// 4-6 are in guests.ts, the start-time measurement in start-time.test.ts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Test } from 'tap';
import { MODULE_DIR, QEMU, cacheEntryName, reprobeSummary, useEnv, type Env, type EnvOptions } from '../harness';
import { onStack, stackSkip, type Stack } from '../stacks';
import {
  QXL,
  WRAPPER,
  WRAP_MODULES,
  addQxlToWrapperDir,
  hookCalls,
  hookRuns,
  hookLayout,
  installProduct,
  journal,
  layout,
  readState,
  replaceModuleInPlace,
  scenarioSkip,
  settle,
  setUpWrapper,
  warnings,
} from '../modwatch';

function hostCtime(p: string): string {
  return fs.statSync(p, { bigint: true }).ctimeNs.toString();
}

/** On migrate and restore libvirt would take a hook's stdout as the new domain XML. */
function neverStdout(t: Test, env: Env): void {
  const runs = hookRuns(env);
  t.ok(
    runs.length > 0 && runs.every((r) => r.status !== null),
    `${env.qemuDaemon} logged ${runs.length} dispatcher runs with their results`,
  );
  t.same(
    runs.filter((r) => r.stdout !== ''),
    [],
    'no dispatcher run wrote to stdout',
  );
}

/** Scenarios 1-3 on `stack`, as subtests of t. */
export function moduleScenarios(t: Test, stack: Stack): void {
  const skip = scenarioSkip(t) || stackSkip(t, stack);
  const scenario = { skip, timeout: 300_000 };
  const on = (opts: EnvOptions) => onStack(stack, opts);

  t.test('1. module replaced in place, module dir mtime unchanged, daemon down', scenario, async (t) => {
    t.test('control: without the hook the restarted daemon serves stale capabilities', async (t) => {
      const env = await useEnv(t, on(layout('mw-s1-control')));
      await env.startDaemon();
      const fresh = await env.domcapsVideoModels();
      t.ok(fresh.includes('qxl'), `qxl among video models at first: ${fresh.join(' ')}`);
      const before = env.cacheFiles();
      t.equal(before.length, 1, 'one cache entry');

      await env.stopDaemon();
      const change = replaceModuleInPlace(env, MODULE_DIR, QXL);
      t.equal(change.inoAfter, change.inoBefore, `${QXL} overwritten in place (same inode)`);
      t.equal(change.dirMtimeAfter, change.dirMtimeBefore, 'module dir mtime unchanged (to the ns)');
      await env.startDaemon();

      const stale = await env.domcapsVideoModels();
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind across the restart');
      t.ok(stale.includes('qxl'), `libvirt still lists qxl: ${stale.join(' ')}`);
      t.same(env.cacheFiles(), before, 'cache entry untouched (inode, mtime, size): no re-probe');

      // What a re-probe says (libvirt's own trigger: module dir mtime).
      const now = new Date();
      fs.utimesSync(env.hostPath(MODULE_DIR), now, now);
      const right = await env.domcapsVideoModels();
      t.same(
        reprobeSummary(env),
        [`${QEMU}: modules directory`],
        "libvirt's reason for the one re-probe: the module dir's mtime",
      );
      t.notOk(
        right.includes('qxl'),
        `after a forced re-probe qxl is gone, so the answer above was stale: ${right.join(' ')}`,
      );
    });

    t.test('with the hook: the daemon-start hook makes libvirt re-probe', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s1-hook')));
      await installProduct(env);
      await env.startDaemon();
      t.equal(hookCalls(env, 'daemon', 'start').length, 1, `${env.qemuDaemon} ran the daemon dispatcher at start`);
      t.ok(readState(env).schema, 'the daemon-start hook recorded a baseline (state.json)');
      const fresh = await env.domcapsVideoModels();
      t.ok(fresh.includes('qxl'), `qxl among video models at first: ${fresh.join(' ')}`);
      const before = env.cacheFiles();
      t.equal(before.length, 1, 'one cache entry');
      const entry = before[0]!;
      t.equal(entry.name, cacheEntryName(QEMU), 'it is the entry of /usr/bin/qemu-system-x86_64');

      await env.stopDaemon();
      const change = replaceModuleInPlace(env, MODULE_DIR, QXL);
      t.equal(change.inoAfter, change.inoBefore, `${QXL} overwritten in place (same inode)`);
      t.equal(change.dirMtimeAfter, change.dirMtimeBefore, 'module dir mtime unchanged (to the ns)');
      const logged = journal(env).length;
      const restartMs = await env.startDaemon();
      t.comment(`${env.qemuDaemon} restart with the daemon hook acting: ${restartMs} ms`);

      t.same(env.cacheFiles(), [], 'the daemon-start hook deleted the entry before libvirt loaded it');
      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, 'one warning logged');
      t.match(w[0]?.message ?? '', QXL, `it names the module: ${w[0]?.message}`);
      t.equal(w[0]?.fields.QEMU_MODWATCH_TRIGGER, 'hook daemon start');
      const last = readState(env).lastAction;
      t.equal(last?.trigger, 'hook daemon start', 'state.json: last action by the daemon-start hook');
      t.same(last?.deleted, [entry.name], 'state.json: that entry deleted');

      const models = await env.domcapsVideoModels();
      t.notOk(models.includes('qxl'), `libvirt re-probed: qxl gone: ${models.join(' ')}`);
      t.same(
        reprobeSummary(env),
        [],
        'libvirt probed anew for want of an entry, never judged one outdated: the hook did it all',
      );
      const after = env.cacheFiles();
      t.equal(after.length, 1, 'a new cache entry');
      // Not the inode: ext4 may give the new file the one just freed.
      t.not(after[0]?.mtimeNs, entry.mtimeNs, 'written anew by the re-probe (new mtime)');
      neverStdout(t, env);
    });

    // The control of this one is in control.ts (first test).
    t.test('with the hook, the other way: module removed and the dir mtime reset', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s1-hook-removed')));
      await installProduct(env);
      await env.startDaemon();
      const fresh = await env.domcapsVideoModels();
      t.ok(fresh.includes('qxl'), `qxl among video models at first: ${fresh.join(' ')}`);
      const [entry] = env.cacheFiles();
      await env.stopDaemon();
      const dir = env.hostPath(MODULE_DIR);
      const dirMtime = fs.statSync(dir, { bigint: true }).mtimeNs;
      const restore = env.saveTimes(MODULE_DIR);
      fs.renameSync(path.join(dir, QXL), path.join(env.dir, `${QXL}.removed`));
      restore();
      t.equal(fs.statSync(dir, { bigint: true }).mtimeNs, dirMtime, `${QXL} removed, dir mtime reset to the ns`);
      const logged = journal(env).length;
      await env.startDaemon();
      t.same(env.cacheFiles(), [], 'the daemon-start hook deleted the entry');
      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, 'one warning logged');
      t.equal(w[0]?.fields.QEMU_MODWATCH_REMOVED, `${MODULE_DIR}/${QXL}`, `it says what changed: ${w[0]?.message}`);
      const models = await env.domcapsVideoModels();
      t.notOk(models.includes('qxl'), `libvirt re-probed: qxl gone: ${models.join(' ')}`);
      t.same(
        reprobeSummary(env),
        [],
        'libvirt probed anew for want of an entry, never judged one outdated: the hook did it all',
      );
      t.not(env.cacheFiles()[0]?.mtimeNs, entry?.mtimeNs, 'a new cache entry (new mtime)');
      neverStdout(t, env);
    });
  });

  t.test('2. a module dir libvirt does not watch (wrapper setting QEMU_MODULE_DIR)', scenario, async (t) => {
    const wrapperEntry = cacheEntryName(WRAPPER);
    t.test('control: without the hook libvirt stays stale', async (t) => {
      const env = await useEnv(t, on(layout('mw-s2-control')));
      setUpWrapper(env);
      await env.startDaemon();
      await env.defineDomain('wrapped', { emulator: WRAPPER });
      const first = await env.domcapsVideoModels(WRAPPER);
      t.notOk(first.includes('qxl'), `no qxl for the wrapper: ${first.join(' ')}`);
      const before = env.cacheFiles().find((f) => f.name === wrapperEntry);
      t.ok(before, "the wrapper's own cache entry");

      addQxlToWrapperDir(env);
      await env.virsh('start', 'wrapped');
      t.equal(await env.domstate('wrapped'), 'running', 'guest runs with the wrapper as emulator');
      const stale = await env.domcapsVideoModels(WRAPPER);
      t.notOk(stale.includes('qxl'), `after adding ${QXL} and a start, still no qxl: ${stale.join(' ')}`);
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
      t.same(
        env.cacheFiles().find((f) => f.name === wrapperEntry),
        before,
        'wrapper cache entry untouched',
      );
      await env.virsh('destroy', 'wrapped');

      // What a re-probe says: change the wrapper's ctime, libvirt's own check.
      await env.exec(['chmod', '0755', WRAPPER]);
      const right = await env.domcapsVideoModels(WRAPPER);
      t.same(reprobeSummary(env), [`${WRAPPER}: binary`], "libvirt's reason for the one re-probe: the wrapper's ctime");
      t.ok(
        right.includes('qxl'),
        `a forced re-probe finds qxl via QEMU_MODULE_DIR, so the answer above was stale: ${right.join(' ')}`,
      );
    });

    t.test('with the hook: the prepare hook of the next start fixes it, no daemon restart', async (t) => {
      const env = await useEnv(t, on(hookLayout('mw-s2-hook')));
      setUpWrapper(env);
      await installProduct(env, { config: `[modules]\ndirs = ${WRAP_MODULES}\n` });
      await env.startDaemon();
      const pid = env.daemonPid();
      await env.defineDomain('wrapped', { emulator: WRAPPER });
      const first = await env.domcapsVideoModels(WRAPPER);
      t.notOk(first.includes('qxl'), `no qxl for the wrapper: ${first.join(' ')}`);
      const std = await env.domcapsVideoModels(QEMU);
      t.notOk(std.includes('qxl'), `nor for the plain emulator (qxl is in no module dir): ${std.join(' ')}`);
      const before = env.cacheFiles().find((f) => f.name === wrapperEntry);
      t.ok(before, "the wrapper's own cache entry");
      await settle(env, 'wrapped');

      addQxlToWrapperDir(env);
      const untilStart = await env.domcapsVideoModels(WRAPPER);
      t.notOk(untilStart.includes('qxl'), 'until a guest starts, libvirt answers as before');
      const logged = journal(env).length;
      await env.virsh('start', 'wrapped');
      t.equal(await env.domstate('wrapped'), 'running', 'guest runs with the wrapper as emulator');
      t.notOk(
        env.cacheFiles().some((f) => f.name === wrapperEntry),
        'the prepare hook deleted the wrapper entry',
      );

      const models = await env.domcapsVideoModels(WRAPPER);
      t.ok(models.includes('qxl'), `qxl now listed for the wrapper: ${models.join(' ')}`);
      t.equal(env.daemonPid(), pid, 'same daemon process: no restart');
      const renewed = env.cacheFiles().find((f) => f.name === wrapperEntry);
      t.ok(renewed && renewed.mtimeNs !== before?.mtimeNs, 'wrapper entry written anew by the re-probe (new mtime)');
      t.same(
        reprobeSummary(env),
        [`${WRAPPER}: binary`],
        "libvirt's reason for the one re-probe: the hook's nudge (the wrapper's ctime)",
      );
      const w = warnings(journal(env).slice(logged));
      t.equal(w.length, 1, 'one warning logged');
      t.match(w[0]?.message ?? '', /added/, `it says what changed: ${w[0]?.message}`);
      t.equal(w[0]?.fields.QEMU_MODWATCH_ADDED, `${WRAP_MODULES}/${QXL}`);
      t.equal(w[0]?.fields.QEMU_MODWATCH_DOMAIN, 'wrapped');
      t.equal(readState(env).lastAction?.trigger, 'hook qemu prepare');
      await env.virsh('destroy', 'wrapped');
      neverStdout(t, env);
    });
  });

  t.test('3. on_change = refuse: the first start after a change fails, the second succeeds', scenario, async (t) => {
    t.test('control: without the hook the start succeeds on stale capabilities', async (t) => {
      const env = await useEnv(t, on(layout('mw-s3-control')));
      await env.startDaemon();
      await env.defineDomain('g');
      await env.virsh('start', 'g');
      await env.virsh('destroy', 'g');
      const before = env.cacheFiles();
      replaceModuleInPlace(env, MODULE_DIR, QXL);
      const r = await env.virshAllowFail('start', 'g');
      t.equal(r.code, 0, 'virsh start succeeds');
      t.same(env.cacheFiles(), before, 'cache entry untouched');
      const models = await env.domcapsVideoModels();
      t.ok(models.includes('qxl'), `stale: qxl still listed: ${models.join(' ')}`);
      t.same(reprobeSummary(env), [], 'libvirt logged no re-probe of any kind');
      await env.virsh('destroy', 'g');
    });

    t.test('with the hook', async (t) => {
      const hostEmulatorCtime = hostCtime(QEMU);
      const env = await useEnv(t, on(hookLayout('mw-s3-hook')));
      await installProduct(env, { config: '[policy]\non_change = refuse\n' });
      await env.startDaemon();
      await env.defineDomain('g');
      await settle(env, 'g');
      const r0 = await env.virshAllowFail('start', 'g');
      t.equal(r0.code, 0, 'nothing changed: the start succeeds');
      await env.virsh('destroy', 'g');
      const before = env.cacheFiles();
      t.equal(before.length, 1, 'one cache entry');

      replaceModuleInPlace(env, MODULE_DIR, QXL);
      const r1 = await env.virshAllowFail('start', 'g');
      t.not(r1.code, 0, 'first start after the change fails');
      const m = /unexpected exit status 1: ([\s\S]*)$/.exec(r1.stderr);
      const hookText = (m?.[1] ?? '').trim();
      t.comment(`virsh: ${r1.stderr.trim().split('\n').join(' | ')}`);
      t.match(r1.stderr, /Hook script execution failed/, 'libvirt reports a hook failure');
      t.match(hookText, /^qemu-modwatch: .*start the domain again$/, 'the hook explains itself');
      t.notMatch(hookText, /\n/, 'in one line');
      t.match(hookText, QXL, 'naming the module');
      const failed = hookRuns(env).filter((r) => r.status !== 0);
      t.equal(failed.length, 1, 'one dispatcher run failed');
      t.equal(failed[0]?.op, 'prepare', 'the prepare hook');
      t.equal(failed[0]?.stderr.trim(), hookText, 'its whole stderr is that line');
      t.equal(await env.domstate('g'), 'shut off', 'the guest did not start');
      t.same(env.cacheFiles(), [], 'the cache entry was deleted');
      t.equal(readState(env).lastAction?.trigger, 'hook qemu prepare');

      const r2 = await env.virshAllowFail('start', 'g');
      t.equal(r2.code, 0, `second start succeeds ${r2.stderr.trim()}`);
      t.equal(await env.domstate('g'), 'running', 'running');
      const after = env.cacheFiles();
      t.equal(after.length, 1, 'libvirt re-probed during that start');
      t.not(after[0]?.mtimeNs, before[0]?.mtimeNs, 'a new cache entry (new mtime)');
      t.same(
        reprobeSummary(env),
        [`${QEMU}: binary`],
        "libvirt's reason for the one re-probe: the hook's nudge (the emulator's ctime)",
      );
      const models = await env.domcapsVideoModels();
      t.notOk(models.includes('qxl'), `fresh capabilities: no qxl: ${models.join(' ')}`);
      await env.virsh('destroy', 'g');
      t.equal(
        hostCtime(QEMU),
        hostEmulatorCtime,
        "the nudge (chmod) stayed in the env: the host's emulator ctime is unchanged",
      );
      neverStdout(t, env);
    });
  });
}
