/** How a CLI run ended, as its exit code: scripts and CI branch on these (listed in --help and the README). */
export const EXIT = {
  /** Done: the operation completed with every device succeeded (or the command itself succeeded). */
  ok: 0,
  /** Usage or input error: bad flags, or the API refused the request as given (400, 404, 409, 422). */
  usage: 1,
  /** The operation completed, but some devices failed or timed out. */
  someFailed: 2,
  /** The operation was aborted by its abort criteria or a rollout group's error threshold. */
  aborted: 3,
  /** The operation was cancelled. */
  cancelled: 4,
  /** The API could not be used: 401/403, 429, 5xx, or unreachable. */
  api: 5,
  /** The operation ended without a result (refused while planning, e.g. FleetOperationNeedsAdmin; terminated). */
  noResult: 6,
  /** Watching was interrupted by Ctrl-C; the operation goes on. */
  interrupted: 130,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0    completed, every device succeeded (or: dry run planned, command done)
  1    usage or input error: bad flags, or the API refused the request (400, 404, 409, 422)
  2    completed with some devices failed or timed out
  3    aborted (abort criteria, or a rollout group past its error threshold)
  4    cancelled
  5    API, auth or network error (401, 403, 429, 5xx, unreachable)
  6    the operation ended without a result (refused while planning, terminated, timed out)
  130  watching interrupted by Ctrl-C (the operation goes on)`;
