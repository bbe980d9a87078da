#!/usr/bin/env python3
"""Rebuilds every test vector of docs/transactions.md from its fields, using only that page's
rules, Python's hashlib and an independent Ed25519 implementation (the `cryptography`
package). Exits non-zero on any mismatch. Usage: scripts/check_vectors.py [docs/transactions.md]
"""
import hashlib
import struct
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
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


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "docs/transactions.md"
    failures, count = 0, 0
    for title, f in vectors(open(path, encoding="utf-8").read()):
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
    print(f"{count} vectors reproduced independently" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
