"""Pure rules of the handoff: states, reason codes, retry policy, hashing. No I/O here."""
