import { Reason, RevocationRequest } from '../../common/revocation';

/**
 * An operator's reason: what the OpenAPI document says of it (maxLength 500, pattern \S) is exactly what the API
 * accepts. The contract fuzzer sent "\n", which the document allowed (minLength 1) and the API refused once trimmed.
 */
describe('reason', () => {
  const documented = (value: string) => value.length <= 500 && /\S/.test(value);

  it.each(['\n', ' ', '\t \r\n', '', 'a', ' spaced out ', 'x'.repeat(500), ` ${'x'.repeat(499)}`, 'x'.repeat(501)])(
    'accepts %j exactly when the document does',
    (value) => {
      expect(Reason.safeParse(value).success).toBe(documented(value));
    },
  );

  it('keeps the reason trimmed, and defaults it when none is given', () => {
    expect(RevocationRequest.parse({ registrationId: 'd1', reason: '  line 3 recall \n' }).reason).toBe(
      'line 3 recall',
    );
    expect(RevocationRequest.parse({ registrationId: 'd1' }).reason).toBe('no reason given');
  });
});
