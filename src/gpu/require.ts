import { GantryError } from '../errors.js';

/**
 * NVIDIA_REQUIRE_* and NVIDIA_DISABLE_REQUIRE, the NVIDIA container toolkit's constraints:
 * in one variable, space-separated alternatives are ORed and comma-separated conditions ANDed;
 * separate NVIDIA_REQUIRE_* variables are ANDed. Conditions are KEY OP VERSION with keys cuda
 * (the CUDA version the driver supports), driver (the driver's version), and brand and arch,
 * which need NVML and are not checked here: NGC images list every brand, each paired with a
 * driver range, so the driver condition decides, as it does on a data-centre GPU.
 */
export interface DriverFacts {
  driver: string;
  /** `12.4`: asked for only when a condition needs it (it loads libcuda). */
  cuda: () => Promise<string | undefined>;
}

interface Condition {
  key: string;
  op: string;
  version: string;
  text: string;
}

const CONDITION = /^([a-z]+)\s*(==|=|!=|<=|>=|<|>)\s*([0-9a-z.]+)$/i;

function parseVariable(name: string, value: string): Condition[][] {
  return value
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map((alt) =>
      alt.split(',').map((text) => {
        const m = CONDITION.exec(text.trim());
        if (!m) throw new GantryError('CONFIG', `${name}=${value}: cannot read the condition "${text}"`, 'conditions look like cuda>=12.4 or driver>=550 (space: or, comma: and); set NVIDIA_DISABLE_REQUIRE=1 to ignore them');
        return { key: m[1]!.toLowerCase(), op: m[2]!, version: m[3]!, text };
      }),
    );
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map((n) => parseInt(n, 10) || 0);
  const pb = b.split('.').map((n) => parseInt(n, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d < 0 ? -1 : 1;
  }
  return 0;
}

function holds(actual: string, op: string, wanted: string): boolean {
  const c = compareVersions(actual, wanted);
  switch (op) {
    case '=':
    case '==':
      return c === 0;
    case '!=':
      return c !== 0;
    case '<':
      return c < 0;
    case '<=':
      return c <= 0;
    case '>':
      return c > 0;
    default:
      return c >= 0;
  }
}

export function requireDisabled(env: Map<string, string>): boolean {
  const v = env.get('NVIDIA_DISABLE_REQUIRE');
  return v !== undefined && v !== '' && !/^(0|false|no|off)$/i.test(v);
}

/** Throws when a NVIDIA_REQUIRE_* variable of `env` is not met by the driver. */
export async function checkRequirements(env: Map<string, string>, facts: DriverFacts, what: string): Promise<void> {
  if (requireDisabled(env)) return;
  let cuda: string | undefined | null = null;
  const value = async (key: string): Promise<string | undefined> => {
    if (key === 'driver') return facts.driver;
    if (key !== 'cuda') return undefined;
    if (cuda === null) cuda = await facts.cuda();
    return cuda;
  };
  for (const [name, text] of [...env].filter(([k]) => k.startsWith('NVIDIA_REQUIRE_')).sort()) {
    const alternatives = parseVariable(name, text);
    if (!alternatives.length) continue;
    let met = false;
    for (const alt of alternatives) {
      let ok = true;
      for (const c of alt) {
        const actual = await value(c.key);
        if (actual === undefined) continue; // brand, arch: see the header
        if (!holds(actual, c.op, c.version)) {
          ok = false;
          break;
        }
      }
      if (ok) {
        met = true;
        break;
      }
    }
    if (!met) {
      const cudaText = cuda ? `, which supports CUDA ${cuda}` : '';
      throw new GantryError(
        'CONFIG',
        `${what} requires ${name}=${text.trim()}, but this host's NVIDIA driver is ${facts.driver}${cudaText}`,
        'update the NVIDIA driver, use an image built for this driver, or set NVIDIA_DISABLE_REQUIRE=1 to start anyway',
      );
    }
  }
}

/** cuDriverGetVersion's 12040 -> "12.4". */
export function cudaVersionText(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}
