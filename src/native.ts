import { accessSync, constants } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GantryError } from './errors.js';

/** The package's root directory (this file is dist/src/native.js once compiled). */
export const PACKAGE_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The native layer extractor built from native/ (GANTRY_UNTAR overrides, for development). */
export function untarBinary(env: NodeJS.ProcessEnv = process.env): string {
  const path = env.GANTRY_UNTAR || join(PACKAGE_ROOT, 'native', 'build', 'Release', 'gantry-untar');
  if (!executable(path)) {
    throw new GantryError('DEPENDENCY', `the native extractor ${path} is missing or not executable`, 'build it: npm run build:native (needs g++ and make)');
  }
  return path;
}

/** The native sandbox launcher built from native/ (GANTRY_EXEC overrides, for development). */
export function execBinary(env: NodeJS.ProcessEnv = process.env): string {
  const path = env.GANTRY_EXEC || join(PACKAGE_ROOT, 'native', 'build', 'Release', 'gantry-exec');
  if (!executable(path)) {
    throw new GantryError('DEPENDENCY', `the native launcher ${path} is missing or not executable`, 'build it: npm run build:native (needs g++ and make)');
  }
  return path;
}

/** A program on PATH, or undefined. */
export function which(command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const path = join(dir, command);
    if (executable(path)) return path;
  }
  return undefined;
}
