"""Consumer side of privacy-preserving queries (keys, encrypted masks, decryption)."""
