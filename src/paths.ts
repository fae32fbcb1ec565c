import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Where Gantry keeps things. Each location has an environment variable and an XDG default,
 * so a user needs no configuration and an administrator can point everyone at a shared store.
 */
export interface GantryPaths {
  /** Images, unpacked layers and (optionally) blobs: GANTRY_STORE. */
  store: string;
  /** Sandboxes and other per-user state: GANTRY_DATA. */
  data: string;
  /** Configuration and credentials: GANTRY_CONFIG. */
  config: string;
}

export function gantryPaths(env: NodeJS.ProcessEnv = process.env): GantryPaths {
  const home = env.HOME || homedir();
  const dataHome = env.XDG_DATA_HOME || join(home, '.local', 'share');
  const configHome = env.XDG_CONFIG_HOME || join(home, '.config');
  return {
    store: env.GANTRY_STORE || join(dataHome, 'gantry', 'store'),
    data: env.GANTRY_DATA || join(dataHome, 'gantry', 'data'),
    config: env.GANTRY_CONFIG || join(configHome, 'gantry'),
  };
}
