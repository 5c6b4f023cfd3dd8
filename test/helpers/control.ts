import type { RunningEmulator } from '../../emulator/server';

/** fetch against the emulator's control API, with its token. */
export function controlFetch(emulator: Pick<RunningEmulator, 'controlToken'>, url: string, init: RequestInit = {}) {
  return fetch(url, {
    ...init,
    headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${emulator.controlToken}` },
  });
}
