// The real `samserve serve` for the browser tests and the page benchmark.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
export const landscape = join(root, 'tests', 'fixtures', 'images', 'landscape.png');

/** Starts `binary serve` on a free port with these fixture model folders (or the built-in `samserve-s`) and a
 * fresh data folder; resolves once ready. */
export async function startServer(binary, models, extra = []) {
  const dataDir = mkdtempSync(join(tmpdir(), 'samserve-e2e-'));
  const specs = models.map((m) => (m === 'samserve-s' ? m : join(root, 'tests', 'fixtures', 'models', m)));
  const child = spawn(binary, ['--device', 'cpu', 'serve', '--port', '0', '--data-dir', dataDir, '--model',
    specs.join(','), ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  const lines = createInterface({ input: child.stdout });
  const [first] = await Promise.race([
    new Promise((done) => lines.once('line', (line) => done([line]))),
    new Promise((_, fail) => child.once('exit', (code) => fail(new Error(`samserve exited with ${code}`)))),
  ]);
  const address = first.trim().split(' ').pop();
  for (let i = 0; i < 600; i += 1) {
    const ready = await fetch(`${address}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    await new Promise((done) => setTimeout(done, 50));
  }
  return { child, address };
}
