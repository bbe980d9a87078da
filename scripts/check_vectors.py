#!/usr/bin/env python3
"""Rebuilds every test vector of docs/transactions.md from its fields, using only that page's
rules, Python's hashlib and an independent Ed25519 implementation (the `cryptography`
package): the transaction vectors, the commit certificate and the equivocation evidence.
Exits non-zero on any mismatch. Usage: scripts/check_vectors.py [docs/transactions.md]
"""
import hashlib
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def vectors(text):
    section = text.split("## Test vectors", 1)[1]
    for chunk in section.split("### Vector ")[1:]:
        block = chunk.split("```text", 1)[1].split("```", 1)[0]
        fields = {}
        for line in block.strip().splitlines():
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
        yield chunk.splitlines()[0], fields


def body(f, sender):
    chain = f["chain_id"].encode("ascii")
    out = bytes([1, len(chain)]) + chain + sender + struct.pack("<Q", int(f["nonce"]))
    if f["action"] == "transfer":
        out += b"\x00" + bytes.fromhex(f["to"]) + struct.pack("<Q", int(f["amount"]))
    else:
        key, value = bytes.fromhex(f["data_key_hex"]), bytes.fromhex(f["data_value_hex"])
        out += b"\x01" + struct.pack("<H", len(key)) + key + struct.pack("<I", len(value)) + value
    return out


def fields_of(text, title):
    block = text.split(title, 1)[1].split("```text", 1)[1].split("```", 1)[0]
    out = {}
    for line in block.strip().splitlines():
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def signing_message(domain, chain, body):
    return bytes([len(domain)]) + domain + bytes([len(chain)]) + chain + body


def public(seed_hex):
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    return sk, sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_certificate(text):
    """The commit certificate: batch digest, body, signatures and encoding, per the page."""
    f = fields_of(text, "### Certificate vector 1")
    errors = []
    chain = f["chain_id"].encode("ascii")
    keys = [public(f[f"seed_{i}"]) for i in range(4)]
    for i, (_, pk) in enumerate(keys):
        if pk.hex() != f[f"validator_{i}"]:
            errors.append(f"validator_{i}")
    hashes = [bytes.fromhex(h) for h in f["tx_hashes"].split()]
    digest = hashlib.sha256(struct.pack("<I", len(hashes)) + b"".join(hashes)).digest()
    if digest.hex() != f["batch_digest"]:
        errors.append("batch_digest")
    body = struct.pack("<QQ", int(f["view"]), int(f["seq"])) + digest
    if body.hex() != f["commit_body"]:
        errors.append("commit_body")
    msg = signing_message(b"tally/pbft/commit/v1", chain, body)
    if msg.hex() != f["signing_message"]:
        errors.append("signing_message")
    cert = body + struct.pack("<H", 3)
    for i in (0, 1, 3):
        sig = keys[i][0].sign(msg)
        if sig.hex() != f[f"signature_{i}"]:
            errors.append(f"signature_{i}")
        cert += struct.pack("<H", i) + sig
    if cert.hex() != f["certificate"]:
        errors.append("certificate")
    return errors


def check_evidence(text):
    """The evidence: both statements verify under the validator's key, same slot, different
    content, and the raw record is laid out as the page says."""
    f = fields_of(text, "### Evidence vector 1")
    errors = []
    chain = f["chain_id"].encode("ascii")
    _, pk = public(f["seed"])
    if pk.hex() != f["public_key"]:
        errors.append("public_key")
    key = Ed25519PublicKey.from_public_bytes(pk)
    domain = f["domain"].encode("ascii")
    statements = []
    for which in ("first", "second"):
        signed = bytes.fromhex(f[f"{which}_bytes"])
        sig = bytes.fromhex(f[f"{which}_signature"])
        try:
            key.verify(sig, signing_message(domain, chain, signed))
        except InvalidSignature:
            errors.append(f"{which}_signature does not verify")
        statements.append((signed, sig))
    (a, sa), (b, sb) = statements
    if a[:16] != b[:16] or a == b:
        errors.append("the statements do not conflict at one slot")
    validator = struct.pack("<H", int(f["validator"]))
    raw = b"".join(bytes([1]) + validator + s + sig for s, sig in statements)
    if raw.hex() != f["raw"]:
        errors.append("raw")
    return errors


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/transactions.md"
    text = open(path, encoding="utf-8").read()
    failures, count = 0, 0
    for name, check in (("certificate", check_certificate), ("evidence", check_evidence)):
        for e in check(text):
            failures += 1
            print(f"{name} vector: {e} differs")
    for title, f in vectors(text):
        count += 1
        sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(f["secret_seed"]))
        pk = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        b = body(f, pk)
        domain, chain = b"tally/tx/v1", f["chain_id"].encode("ascii")
        msg = bytes([len(domain)]) + domain + bytes([len(chain)]) + chain + b
        sig = sk.sign(msg)
        encoded = b + sig
        got = {
            "public_key": pk.hex(),
            "body": b.hex(),
            "signing_message": msg.hex(),
            "signature": sig.hex(),
            "encoded": encoded.hex(),
            "hash": hashlib.sha256(encoded).hexdigest(),
        }
        for k, v in got.items():
            if f[k] != v:
                failures += 1
                print(f"vector {title}: {k} differs\n  page: {f[k]}\n  here: {v}")
    if count < 3:
        print(f"only {count} vectors on the page")
        return 1
    print(
        f"{count} transaction vectors, the certificate and the evidence reproduced independently"
        if not failures
        else f"{failures} mismatches"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
