// --timeout needs a timer that fires while the check is stuck inside a
// system call (a read of /proc/PID/cmdline of a process in D state, a hung
// network file system). Node cannot interrupt its own synchronous calls,
// and a worker thread stuck in one would keep the process from exiting; so
// the check runs in a child process of the same executable, which is
// killed when the time is up.

export interface TimedResult {
  timedOut: boolean;
  code: number;
  stdout: string;
  stderr: string;
}

export function runTimed(args: string[], seconds: number): Promise<TimedResult> {
  // Loaded here, not at the top: every start of the program would pay for it.
  const { spawn } = require('node:child_process') as typeof import('node:child_process');
  const [file, prefix] = selfCommand();
  return new Promise((resolve) => {
    const child = spawn(file, [...prefix, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    let done = false;
    const finish = (r: TimedResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      // A child in uninterruptible sleep outlives SIGKILL for a while: do
      // not wait for it or its pipes.
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      finish({ timedOut: true, code: 3, stdout: '', stderr: '' });
    }, seconds * 1000);
    child.on('error', (e) =>
      finish({ timedOut: false, code: 3, stdout: '', stderr: `qemu-modwatch: cannot run the check: ${e.message}\n` }),
    );
    child.on('close', (code, signal) =>
      finish({
        timedOut: false,
        code: code ?? (signal ? 3 : 0),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      }),
    );
  });
}

function isSea(): boolean {
  try {
    return (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    // Older Node without node:sea runs the bundle, never a single executable.
    return false;
  }
}

/** How to start this program again: the single executable itself, or node with the bundle. */
function selfCommand(): [string, string[]] {
  return isSea() ? [process.execPath, []] : [process.execPath, [...process.execArgv, process.argv[1]!]];
}

/** This program's own file: the single executable, or the bundle node runs. */
export function selfExecutable(): string {
  return isSea() ? process.execPath : process.argv[1]!;
}
