/**
 * A string literal for a Temporal visibility query. Values reach queries from requests and from Event Grid (Azure
 * device ids may contain `'`), so quotes and backslashes are escaped rather than trusted.
 */
export function visibilityLiteral(value: string): string {
  return `'${value.replace(/[\\']/g, (c) => `\\${c}`)}'`;
}
