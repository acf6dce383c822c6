import * as fs from 'node:fs';
import * as path from 'node:path';
import t from 'tap';
import { freePort, httpGet, needTool, startDaemon, tempDir, waitHttpReady, type Daemon } from '../fixtures/monitoring';
import { sleep, tail, waitFor } from '../fixtures/processes';
import { EMULATOR, MODDIR, TOP, sysroot } from '../fixtures/sysroot';

// The shipped rules in a real Prometheus, scraping Debian's real
// node_exporter whose textfile collector reads the directory --textfile
// writes: a module change and a check make the alerts fire, what resolves
// them (refresh, the module put right, the config fixed) and another
// textfile write make them go. Prometheus' own /api/v1/alerts is the
// answer. Only the `for:` durations are cut to 0s, so that an alert
// fires at the first evaluation that sees it; promtool.test.ts tests them.

const RULES = path.join(TOP, 'hooks/prometheus/qemu-modwatch.rules.yml');
const OTHER = 'cd'.repeat(20);
const AARCH64 = '/usr/bin/qemu-system-aarch64';

const prometheus = needTool(t, 'prometheus', 'prometheus');
const exporter = needTool(t, 'prometheus-node-exporter', 'prometheus-node-exporter');

interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: string;
}

t.test('alerts fire and resolve in a real Prometheus', { skip: !prometheus || !exporter }, async (t) => {
  const work = tempDir(t, 'prometheus');
  const textfiles = path.join(work, 'textfile');
  fs.mkdirSync(textfiles);

  // A host whose aarch64 cache entry libvirt will keep serving once a
  // module is replaced in place (the directory's mtime put back).
  const s = sysroot(t);
  s.addEmulator(AARCH64, { dirs: [MODDIR] });
  s.run(['accept']);
  const dirMtime = Math.floor(fs.statSync(s.host(MODDIR)).mtimeMs / 1000);
  // Written after the modules (whose ctimes are now): fresh.
  s.addCacheEntry(EMULATOR, { ageSeconds: 0, qemumoddirmtime: dirMtime });
  s.addCacheEntry(AARCH64, { ageSeconds: 0, qemumoddirmtime: dirMtime });
  const check = () => {
    const r = s.run(['--check', '--textfile', textfiles]);
    t.equal(r.code, 0, `check wrote the textfile ${r.stderr}`);
  };
  check();

  const rulesText = fs.readFileSync(RULES, 'utf8');
  let cut = 0;
  const rules = path.join(work, 'rules.yml');
  fs.writeFileSync(
    rules,
    rulesText.replace(/^(\s+)for: \S+$/gm, (_, indent: string) => (cut++, `${indent}for: 0s`)),
  );
  const alertNames = [...rulesText.matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);
  t.equal(cut, alertNames.length, 'every rule has a for: and only those lines changed');

  const exporterPort = await freePort();
  const node = startDaemon(
    t,
    [
      exporter!,
      '--collector.disable-defaults',
      '--collector.textfile',
      `--collector.textfile.directory=${textfiles}`,
      `--web.listen-address=127.0.0.1:${exporterPort}`,
    ],
    path.join(work, 'node-exporter.log'),
  );
  await waitHttpReady(node, `http://127.0.0.1:${exporterPort}/metrics`);

  const promPort = await freePort();
  const config = path.join(work, 'prometheus.yml');
  fs.writeFileSync(
    config,
    [
      'global:',
      '  scrape_interval: 1s',
      '  evaluation_interval: 1s',
      'rule_files:',
      `  - ${JSON.stringify(rules)}`,
      'scrape_configs:',
      '  - job_name: node',
      '    static_configs:',
      `      - targets: ['127.0.0.1:${exporterPort}']`,
      '',
    ].join('\n'),
  );
  const prom: Daemon = startDaemon(
    t,
    [
      prometheus!,
      `--config.file=${config}`,
      `--storage.tsdb.path=${path.join(work, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
    ],
    path.join(work, 'prometheus.log'),
  );
  await waitHttpReady(prom, `http://127.0.0.1:${promPort}/-/ready`, 60_000);
  const api = async (p: string): Promise<any> => {
    const r = await httpGet(`http://127.0.0.1:${promPort}${p}`);
    if (!r || r.status !== 200) throw new Error(`${p}: ${r ? `${r.status} ${r.body}` : 'no answer'}`);
    return JSON.parse(r.body).data;
  };
  const firing = async (): Promise<Alert[]> =>
    ((await api('/api/v1/alerts')).alerts as Alert[]).filter((a) => a.state === 'firing');
  const instance = `127.0.0.1:${exporterPort}`;
  /** Waits until the firing alerts are exactly `names` (a bounded wait) and returns them. */
  const expectFiring = async (names: string[], why: string): Promise<Alert[]> => {
    let last: Alert[] = [];
    const ok = await waitFor(
      async () => {
        last = await firing();
        return JSON.stringify(last.map((a) => a.labels.alertname).sort()) === JSON.stringify([...names].sort());
      },
      30_000,
      250,
    );
    t.ok(
      ok,
      `${why}: firing ${JSON.stringify(names)}, ` +
        `got ${JSON.stringify(last.map((a) => a.labels.alertname))}${ok ? '' : `\n${tail(prom.log)}`}`,
    );
    return last;
  };

  const groups = await api('/api/v1/rules');
  t.same(
    groups.groups.flatMap((g: any) => g.rules.map((r: any) => r.name)).sort(),
    [...alertNames].sort(),
    'Prometheus loaded every shipped rule',
  );
  // Scraped and evaluated before anything is wrong: nothing fires.
  t.ok(
    await waitFor(
      async () => (await api('/api/v1/query?query=qemu_modwatch_check_success')).result.length === 1,
      30_000,
      250,
    ),
    'the textfile is scraped',
  );
  // An evaluation that saw the series, or "nothing fires" would prove nothing.
  const scraped = Date.now();
  t.ok(
    await waitFor(
      async () =>
        (await api('/api/v1/rules')).groups[0].rules.every(
          (r: any) => r.health === 'ok' && Date.parse(r.lastEvaluation) > scraped + 1000,
        ),
      30_000,
      250,
    ),
    'every rule evaluated, healthy, after the first scrape',
  );
  await expectFiring([], 'a healthy host');
  const scrapeError = await api('/api/v1/query?query=node_textfile_scrape_error');
  t.equal(scrapeError.result[0]?.value[1], '0', 'node_exporter parses the textfile');

  // A module replaced in place and one of another build added (QEMU
  // refuses it), the directory's mtime put back both times: libvirt's own
  // check sees nothing and keeps serving both cache entries.
  // A change in the same second as the entries' writing could read as older.
  await sleep(1100);
  s.replaceInPlace(MODDIR, 'hw-display-qxl.so');
  const dir = fs.statSync(s.host(MODDIR));
  s.addModule(MODDIR, 'hw-usb-host.so', { stamp: OTHER });
  fs.utimesSync(s.host(MODDIR), dir.atime, dir.mtime);
  check();
  const both = await expectFiring(
    ['QemuModwatchRefusedModules', 'QemuModwatchStaleCacheServed'],
    'after the module change and a check',
  );
  const refused = both.find((a) => a.labels.alertname === 'QemuModwatchRefusedModules');
  t.same(
    {
      severity: refused?.labels.severity,
      dir: refused?.labels.dir,
      instance: refused?.labels.instance,
      job: refused?.labels.job,
    },
    { severity: 'critical', dir: MODDIR, instance, job: 'node' },
    'the refused-modules alert names the host and the directory',
  );
  t.match(refused?.annotations.summary, `QEMU refuses 1 module(s) in ${MODDIR} on ${instance}`);
  const stale = both.find((a) => a.labels.alertname === 'QemuModwatchStaleCacheServed');
  t.equal(stale?.labels.severity, 'warning');
  t.match(stale?.annotations.summary, new RegExp(`^libvirt on ${instance.replace(/\./g, '\\.')} serves 2 stale`));
  t.match(stale?.annotations.description, /Run 'qemu-modwatch refresh'/);

  // refresh deletes the stale entries; the refused module is not its to fix.
  const r = s.run(['refresh', '--textfile', textfiles]);
  t.equal(r.code, 0, `refresh exits 0 ${r.stderr}`);
  t.same(s.cacheFiles(), [], 'refresh deleted the cache entries');
  await expectFiring(['QemuModwatchRefusedModules'], 'after refresh');

  // The stray module removed: the next check resolves the rest.
  fs.rmSync(s.host(`${MODDIR}/hw-usb-host.so`));
  check();
  await expectFiring([], 'after the module is removed and a check');

  // The tool's own failure: a config it cannot read, then the config fixed.
  s.writeConfig('[policy]\non_change = sometimes\n');
  t.equal(
    s.run(['--check', '--textfile', textfiles]).code,
    3,
    'a check that cannot check exits 3 and writes the failure',
  );
  const failed = await expectFiring(['QemuModwatchCheckFailed'], 'after a check that could not check');
  t.equal(failed[0]?.labels.severity, 'warning');
  fs.rmSync(s.host('/etc/qemu-modwatch.conf'));
  check();
  await expectFiring([], 'after the config is fixed and a check');

  await prom.stop();
  await node.stop();
  t.notOk(prom.child.exitCode === null && prom.child.signalCode === null, 'prometheus stopped');
});
