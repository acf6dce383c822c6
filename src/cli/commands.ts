import { assess } from '../core/decide';
import type { Context } from '../system/observe';
import { observe } from '../system/observe';
import { stateFiles } from '../system/paths';
import { withStateLock } from '../system/lock';
import { writeState } from '../system/state-store';
import { VERSION } from '../version';
import { formatText } from './format-text';
import { buildReport } from './report';

export interface Output {
  stdout: string;
  exitCode: number;
}

/** Read-only: writes no state and deletes nothing. */
export function runCheck(ctx: Context, json: boolean): Output {
  const observed = observe(ctx);
  const assessment = assess(observed);
  const report = buildReport(observed, assessment);
  return { stdout: json ? JSON.stringify(report, null, 2) + '\n' : formatText(report), exitCode: report.exitCode };
}

export async function runAccept(ctx: Context, json: boolean): Promise<Output> {
  const files = stateFiles(ctx.paths);
  return withStateLock(ctx.paths.host(ctx.paths.stateDir), ctx.paths.host(files.lock), () => {
    const observed = observe(ctx);
    const previous = observed.loaded.kind === 'ok' ? observed.loaded.state.lastAction : null;
    writeState(ctx.paths.host(files.state), {
      schema: 1,
      writtenBy: VERSION,
      baseline: observed.fingerprint,
      lastAction: previous,
    });
    const modules = observed.fingerprint.dirs.reduce((n, d) => n + d.modules.length, 0);
    const dirs = observed.fingerprint.dirs.length;
    const summary = { accepted: true, modules, moduleDirs: dirs, emulators: observed.fingerprint.emulators.length };
    return {
      stdout: json ? JSON.stringify(summary) + '\n' : `baseline recorded: ${modules} modules in ${dirs} module directories\n`,
      exitCode: 0,
    };
  });
}
