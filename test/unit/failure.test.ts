import t from 'tap';
import { errorLine, usageFailure } from '../../src/cli/failure';
import { nagiosFailure } from '../../src/cli/format-nagios';

// How a command says it failed, before any I/O: one safe line on stderr,
// and for a monitoring plugin its UNKNOWN line on stdout.

t.test('an error is one line, with nothing a terminal would act on', async (t) => {
  t.equal(errorLine('cannot read x'), 'qemu-modwatch: cannot read x\n');
  t.equal(errorLine('two\n  lines'), 'qemu-modwatch: two lines\n');
  t.notMatch(errorLine('name \x1b[31mred'), /\x1b/);
});

t.test('bad arguments: exit 3, and UNKNOWN on stdout for nagios however the format was given', async (t) => {
  t.same(usageFailure(['--bogus'], 'unknown option --bogus'), {
    stdout: '',
    stderr: 'qemu-modwatch: unknown option --bogus (try --help)\n',
    exitCode: 3,
  });
  for (const argv of [
    ['--format=nagios', '--bogus'],
    ['--format', 'nagios', '--bogus'],
  ])
    t.same(usageFailure(argv, 'bad'), {
      stdout: nagiosFailure('bad'),
      stderr: 'qemu-modwatch: bad (try --help)\n',
      exitCode: 3,
    });
  t.equal(usageFailure(['nagios'], 'bad').stdout, '', 'a bare word nagios is not the format');
});
