import type { SearchAttributePair } from '@temporalio/common';
import { SA } from './search-attributes';

/**
 * Who asked for an operation or a change to it, recorded with it so that "who revoked this device" is one query:
 *
 * - at start, in the workflow's memo under `requestedBy` and in the Keyword search attribute `IotRequestedBy`
 *   (`<authMethod>:<subject>`, e.g. `oidc:1f0e…` or `apiKey:ci-pipeline`): `requestedByStartOptions()` gives both;
 * - in the workflow's input (a field the API sets from the credentials, never from the request body) and so in its
 *   status and result;
 * - for a change (cancel, a compensation retry, …) in the message that carries it to the workflow, which keeps
 *   it in its status, result and report; and in the API's log line for the request.
 *
 * Only names: the caller's key or token never goes anywhere.
 */
export interface RequestedBy {
  /** The token's `oid`/`sub`, or the API key's id. */
  subject: string;
  /** A name for people: the token's `preferred_username`/`name`/client id, or the API key's `name`. */
  name?: string;
  authMethod: 'oidc' | 'apiKey';
}

export const REQUESTED_BY_MEMO = 'requestedBy';

/** The `IotRequestedBy` value: unique across methods, so a key id never passes for a user's object id. */
export function requestedByKeyword(by: RequestedBy): string {
  return `${by.authMethod}:${by.subject}`;
}

/** The memo entry and search attribute a start records; spread into the start options' memo and attributes. */
export function requestedByStartOptions(by: RequestedBy): {
  memo: Record<string, RequestedBy>;
  searchAttribute: SearchAttributePair;
} {
  return {
    memo: { [REQUESTED_BY_MEMO]: by },
    searchAttribute: { key: SA.requestedBy, value: requestedByKeyword(by) },
  };
}

/**
 * The second argument of a workflow the API starts: who asked for it (set from the credentials, never from the
 * request body, so a caller cannot claim to be someone else). Optional, so runs started without it still replay.
 */
export interface OperationContext {
  requestedBy?: RequestedBy;
}

/** What a message that changes a running operation carries besides its own arguments. */
export interface ChangeRequest {
  requestedBy?: RequestedBy;
}

/** A change an operator made to a running operation, as the workflow records it. */
export interface OperatorAction {
  action: string;
  requestedBy: RequestedBy;
  /** When the workflow received it. */
  at?: string;
}
