import { escapeControl } from '../core/text';
import type { FailMode } from '../host/config';
import { log } from '../os/log';
import type { Context } from '../app/look';
import type { Paths } from '../host/paths';
import { runPipeline } from '../app/pipeline';
import { describeTrigger, type Trigger } from '../core/plan';
import { readDomainXml } from '../formats/domain-xml';
import { daemonKind } from '../core/daemons';
import { hookDaemon, hookDaemonPid } from './daemons';
import type { Driver } from '../core/daemons';
import { classifyHook } from './invocation';
import { recordDaemonRun } from '../app/record';

// Hook mode. Writes nothing to stdout (on migrate and restore libvirt takes
// it as the new domain XML), never calls libvirt, and a fault of ours never
// blocks a guest unless the admin asked for fail = closed.

export interface HookSetup {
  paths: Paths;
  /** Loads the config; throws ConfigError. */
  context: () => Context;
}

export async function runHook(driver: Driver, args: string[], setup: HookSetup): Promise<number> {
  if (args.length < 4) {
    // libvirt always passes four; anything else is a person or a broken caller, and worth one line.
    const shown = args.map((a) => `'${a}'`).join(' ') || 'none';
    log(setup.paths, {
      priority: 'notice',
      message: `hook ${driver} called with ${args.length} of libvirt's 4 arguments (${shown}); ignored`,
    });
    return 0;
  }
  const op = classifyHook(driver, args);
  if (!op.handled) return 0;
  let trigger: Trigger;
  if (op.driver === 'daemon') {
    const daemon = hookDaemon(setup.paths, process.env);
    // virtnetworkd and its kind hold no QEMU capabilities: a change is left for virtqemud's own hooks to see.
    if (daemonKind(daemon) === 'other') return 0;
    if (daemon !== null && daemonKind(daemon) === 'qemu')
      recordDaemonRun(setup.paths, daemon, hookDaemonPid(process.env));
    trigger = { kind: op.op === 'start' ? 'daemon-start' : 'daemon-reload', daemon };
  } else {
    trigger = { kind: 'qemu', op: op.op, domain: op.domain, emulator: null };
  }
  let fail: FailMode = 'open';
  try {
    // The config first: it says whether a bad domain XML may block the start.
    const ctx = setup.context();
    fail = ctx.config.fail;
    if (trigger.kind === 'qemu') {
      const domain = readDomainXml(0);
      trigger = { ...trigger, emulator: domain.emulator };
    }
    const result = await runPipeline(ctx, trigger);
    if (result.refusal) {
      process.stderr.write(escapeControl(result.refusal) + '\n');
      return 1;
    }
    if (result.done.errors.length > 0 && fail === 'closed') {
      process.stderr.write(`qemu-modwatch: ${escapeControl(result.done.errors[0]!)} (fail = closed)\n`);
      return 1;
    }
    return 0;
  } catch (e) {
    const reason = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
    const where = trigger.kind === 'qemu' ? ` for domain '${trigger.domain}'` : '';
    const outcome = fail === 'closed' ? 'refusing (fail = closed)' : 'not blocking (fail = open)';
    log(setup.paths, { priority: 'err', message: `${describeTrigger(trigger)}${where} failed: ${reason}; ${outcome}` });
    if (fail === 'closed') {
      // libvirt shows this to whoever started the guest: names in it are others'.
      process.stderr.write(`qemu-modwatch: ${escapeControl(reason)}\n`);
      return 1;
    }
    return 0;
  }
}
