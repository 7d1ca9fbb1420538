import Crypto
import Foundation

/// NATS NKeys (https://docs.nats.io/running-a-nats-service/configuration/securing_nats/auth_intro/nkey_auth):
/// an Ed25519 key pair written as base32 text with a type prefix byte and a CRC-16 trailer.
/// sinkd needs only a user seed: it yields the public key to present and signs the server's nonce.
public struct NKeyPair: Sendable {
    public enum KeyType: UInt8, Sendable {
        case `operator` = 112  // 'O' (14 << 3)
        case account = 0  // 'A' (0 << 3)
        case user = 160  // 'U' (20 << 3)
        case server = 104  // 'N' (13 << 3)
    }

    public let type: KeyType
    let privateKey: Curve25519.Signing.PrivateKey

    /// Decodes a seed (`SU...` for a user). Errors say what is wrong without echoing the secret.
    public init(seed: String) throws(NKeyError) {
        let raw = try Self.decodeChecked(seed.trimmingCharacters(in: .whitespacesAndNewlines))
        guard raw[0] & 0xF8 == 144 else { throw NKeyError("not an NKey seed (seeds start with 'S')") }
        guard raw.count == 34 else { throw NKeyError("an NKey seed decodes to 34 bytes; this one has \(raw.count)") }
        let prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        guard let type = KeyType(rawValue: prefix) else { throw NKeyError("an NKey seed of an unknown key type") }
        self.type = type
        do {
            privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: raw[2..<34])
        } catch {
            throw NKeyError("the NKey seed is not an Ed25519 seed")
        }
    }

    /// The public key as NATS writes it (`U...` for a user).
    public var publicKey: String {
        var raw = [type.rawValue]
        raw.append(contentsOf: privateKey.publicKey.rawRepresentation)
        let crc = Self.crc16(raw)
        raw.append(UInt8(crc & 0xFF))
        raw.append(UInt8(crc >> 8))
        return Base32.encode(raw)
    }

    /// The signature of the server's nonce, base64url without padding, as CONNECT's `sig`.
    public func sign(nonce: String) throws(NKeyError) -> String {
        do {
            let signature = try privateKey.signature(for: Data(nonce.utf8))
            return Data(signature).base64EncodedString()
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
                .replacingOccurrences(of: "=", with: "")
        } catch {
            throw NKeyError("cannot sign the server nonce: \(error)")
        }
    }

    static func decodeChecked(_ text: String) throws(NKeyError) -> [UInt8] {
        guard let raw = Base32.decode(text), raw.count > 2 else { throw NKeyError("an NKey is base32 text (A-Z, 2-7)") }
        let body = Array(raw.dropLast(2))
        let crc = UInt16(raw[raw.count - 2]) | UInt16(raw[raw.count - 1]) << 8
        guard crc == crc16(body) else { throw NKeyError("the NKey's checksum does not match (mistyped or truncated)") }
        return body
    }

    /// CRC-16/XMODEM (polynomial 0x1021, initial 0), as the NKeys library computes it.
    static func crc16(_ bytes: [UInt8]) -> UInt16 {
        var crc: UInt16 = 0
        for b in bytes {
            crc ^= UInt16(b) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return crc
    }
}

public struct NKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// RFC 4648 base32 without padding, as NKeys use it.
enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = buffer << 8 | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.utf8 where c != UInt8(ascii: "=") {
            let v: UInt8
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = c - UInt8(ascii: "A")
            case UInt8(ascii: "2")...UInt8(ascii: "7"): v = c - UInt8(ascii: "2") + 26
            default: return nil
            }
            buffer = buffer << 5 | UInt32(v)
            bits += 5
            if bits >= 8 {
                out.append(UInt8((buffer >> UInt32(bits - 8)) & 0xFF))
                bits -= 8
            }
        }
        return out
    }
}

/// A NATS credentials file (`nsc generate creds`): the user JWT and the user's NKey seed, each
/// between `-----BEGIN ...-----` / `------END ...------` lines.
public struct NATSCredentials: Sendable {
    public var jwt: String
    public var seed: String

    public init(text: String, path: String) throws(NKeyError) {
        var blocks: [String] = []
        var current: [String]?
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("---") {
                if let body = current {
                    blocks.append(body.joined())
                    current = nil
                } else if trimmed.contains("BEGIN") {
                    current = []
                }
            } else if current != nil, !trimmed.isEmpty {
                current?.append(trimmed)
            }
        }
        guard blocks.count >= 2, !blocks[0].isEmpty, !blocks[1].isEmpty else {
            throw NKeyError(
                "\(path): a credentials file holds a 'BEGIN NATS USER JWT' block and then a 'BEGIN USER NKEY SEED' block"
            )
        }
        jwt = blocks[0]
        seed = blocks[1]
    }
}
