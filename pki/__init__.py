"""Device PKI: the CA, the broker's certificate, device certificates and revocation."""
