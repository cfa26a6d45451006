"""Keys, hashes and JWTs: the cryptographic primitives the protocols share."""
