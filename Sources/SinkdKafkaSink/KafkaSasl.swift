import Crypto
import Foundation
import SinkdCore

/// SaslHandshake (api key 17) v1 and SaslAuthenticate (api key 36) v0-v1: SASL on a Kafka
/// connection after ApiVersions (KIP-152: the SASL tokens ride in Kafka frames). Fields from
/// Kafka's SaslHandshakeRequest/Response.json and SaslAuthenticateRequest/Response.json. I/O-free.
public enum KafkaSaslHandshake {
    public static let apiKey: Int16 = 17

    public static func request(correlationID: Int32, clientID: String, mechanism: String) -> [UInt8] {
        var body = KafkaWriter()
        KafkaRequestHeader.v1(&body, apiKey: apiKey, version: 1, correlationID: correlationID, clientID: clientID)
        body.string(mechanism)
        return KafkaRequestHeader.framed(body.bytes)
    }

    public struct Response: Sendable, Equatable {
        public var errorCode: Int16
        public var mechanisms: [String]
    }

    public static func response(_ payload: [UInt8]) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        _ = try r.int32("correlation id")
        let error = try r.int16("error code")
        let count = try r.arrayCount("mechanisms count", minimumElementBytes: 2)
        var mechanisms: [String] = []
        for _ in 0..<count { mechanisms.append(try r.nullableString("mechanism") ?? "") }
        return Response(errorCode: error, mechanisms: mechanisms)
    }
}

public enum KafkaSaslAuthenticate {
    public static let apiKey: Int16 = 36
    public static let versions: ClosedRange<Int16> = 0...1

    public static func request(version: Int16, correlationID: Int32, clientID: String, authBytes: [UInt8]) -> [UInt8] {
        var body = KafkaWriter()
        KafkaRequestHeader.v1(&body, apiKey: apiKey, version: version, correlationID: correlationID, clientID: clientID)
        body.int32(Int32(truncatingIfNeeded: authBytes.count))
        body.raw(authBytes)
        return KafkaRequestHeader.framed(body.bytes)
    }

    public struct Response: Sendable, Equatable {
        public var errorCode: Int16
        public var errorMessage: String?
        public var authBytes: [UInt8]
        /// v1: how long the broker keeps the authenticated session (0: no limit, KIP-368).
        public var sessionLifetimeMillis: Int64
    }

    public static func response(_ payload: [UInt8], version: Int16) throws(KafkaReader.Truncated) -> Response {
        var r = KafkaReader(payload)
        _ = try r.int32("correlation id")
        let error = try r.int16("error code")
        let message = try r.nullableString("error message")
        let n = Int(try r.int32("auth bytes length"))
        let bytes = n < 0 ? [] : Array(try r.take(n, "auth bytes"))
        let lifetime = version >= 1 ? try r.int64("session lifetime") : 0
        return Response(errorCode: error, errorMessage: message, authBytes: bytes, sessionLifetimeMillis: lifetime)
    }
}

/// The client side of one SASL exchange, as plain values: `start()` gives the first token,
/// `next(_:)` takes each server token and gives the next one to send, or `nil` when the exchange
/// is complete (for SCRAM only after the server proved it knows the password too).
public struct KafkaSaslAuthenticator: Sendable {
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// SCRAM iteration counts outside this range are refused: below Kafka's minimum (4096) the
    /// stored password is weak, far above it a hostile broker would make each connection burn CPU.
    public static let iterations: ClosedRange<Int> = 4096...1_000_000

    enum Step: Sendable {
        case plainSent
        case scramFirstSent(clientFirstBare: String)
        case scramFinalSent(serverSignature: [UInt8])
        case done
    }

    public let mechanism: KafkaSASLConfig.Mechanism
    let username: String
    let password: String
    let nonce: String
    var step: Step = .done

    /// `nonce`: the SCRAM client nonce (printable, no ','); random unless a test fixes it.
    public init(_ config: KafkaSASLConfig, nonce: String? = nil) {
        mechanism = config.mechanism
        username = config.username
        password = config.password
        self.nonce = nonce ?? Self.randomNonce()
    }

    static func randomNonce() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var rng = SystemRandomNumberGenerator()
        return String((0..<32).map { _ in alphabet[Int(rng.next(upperBound: UInt32(alphabet.count)))] })
    }

    /// RFC 5802's saslname: '=' and ',' escaped.
    static func saslName(_ name: String) -> String {
        name.replacingOccurrences(of: "=", with: "=3D").replacingOccurrences(of: ",", with: "=2C")
    }

    public mutating func start() -> [UInt8] {
        switch mechanism {
        case .plain:
            step = .plainSent
            return [0] + Array(username.utf8) + [0] + Array(password.utf8)
        case .scramSHA256, .scramSHA512:
            let bare = "n=\(Self.saslName(username)),r=\(nonce)"
            step = .scramFirstSent(clientFirstBare: bare)
            return Array(("n,," + bare).utf8)
        }
    }

    /// The next token to send, or nil: authenticated.
    public mutating func next(_ server: [UInt8]) throws(Failure) -> [UInt8]? {
        switch step {
        case .plainSent:
            step = .done
            return nil
        case .scramFirstSent(let bare):
            let serverFirst = String(decoding: server, as: UTF8.self)
            let fields = Self.fields(serverFirst)
            if let e = fields["e"] { throw Failure("the broker refused the SCRAM exchange: \(e)") }
            guard let serverNonce = fields["r"], serverNonce.hasPrefix(nonce), serverNonce.count > nonce.count else {
                throw Failure(
                    "the broker's SCRAM nonce does not extend sinkd's (a broker that does not follow RFC 5802, or a man in the middle)"
                )
            }
            guard let saltText = fields["s"], let salt = Base64.decode(saltText), !salt.isEmpty else {
                throw Failure("the broker's SCRAM first message has no valid salt")
            }
            guard let iterationText = fields["i"], let iterations = Int(iterationText),
                Self.iterations.contains(iterations)
            else {
                throw Failure(
                    "the broker's SCRAM iteration count \(fields["i"] ?? "(none)") is outside \(Self.iterations.lowerBound)...\(Self.iterations.upperBound)"
                )
            }
            let withoutProof = "c=biws,r=\(serverNonce)"
            let authMessage = Array("\(bare),\(serverFirst),\(withoutProof)".utf8)
            let (proof, serverSignature) =
                mechanism == .scramSHA256
                ? Self.scram(
                    SHA256.self, password: Array(password.utf8), salt: salt, iterations: iterations,
                    authMessage: authMessage)
                : Self.scram(
                    SHA512.self, password: Array(password.utf8), salt: salt, iterations: iterations,
                    authMessage: authMessage)
            step = .scramFinalSent(serverSignature: serverSignature)
            return Array("\(withoutProof),p=\(Base64.encode(proof))".utf8)
        case .scramFinalSent(let expected):
            let fields = Self.fields(String(decoding: server, as: UTF8.self))
            if let e = fields["e"] {
                throw Failure("the broker refused the SCRAM proof: \(e) (a wrong username or password)")
            }
            guard let v = fields["v"], let signature = Base64.decode(v), signature == expected else {
                throw Failure(
                    "the broker's SCRAM server signature is wrong: it does not know the password (a man in the middle?)"
                )
            }
            step = .done
            return nil
        case .done:
            throw Failure("the broker sent a SASL token after the exchange was complete")
        }
    }

    static func fields(_ message: String) -> [String: String] {
        var out: [String: String] = [:]
        for part in message.split(separator: ",", omittingEmptySubsequences: true) {
            guard let eq = part.firstIndex(of: "="), part.distance(from: part.startIndex, to: eq) == 1 else { continue }
            let key = String(part[..<eq])
            if out[key] == nil { out[key] = String(part[part.index(after: eq)...]) }
        }
        return out
    }

    /// RFC 5802 section 3: the client proof and the server signature it expects.
    static func scram<H: HashFunction>(
        _: H.Type, password: [UInt8], salt: [UInt8], iterations: Int, authMessage: [UInt8]
    ) -> (proof: [UInt8], serverSignature: [UInt8]) {
        let salted = hi(H.self, password: password, salt: salt, iterations: iterations)
        let key = SymmetricKey(data: salted)
        let clientKey = Array(HMAC<H>.authenticationCode(for: Array("Client Key".utf8), using: key))
        let storedKey = Array(H.hash(data: clientKey))
        let clientSignature = Array(HMAC<H>.authenticationCode(for: authMessage, using: SymmetricKey(data: storedKey)))
        let proof = zip(clientKey, clientSignature).map { $0 ^ $1 }
        let serverKey = Array(HMAC<H>.authenticationCode(for: Array("Server Key".utf8), using: key))
        let serverSignature = Array(HMAC<H>.authenticationCode(for: authMessage, using: SymmetricKey(data: serverKey)))
        return (proof, serverSignature)
    }

    /// Hi(): PBKDF2 with HMAC-H, one block.
    static func hi<H: HashFunction>(_: H.Type, password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var u = Array(HMAC<H>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = u
        for _ in 1..<max(1, iterations) {
            u = Array(HMAC<H>.authenticationCode(for: u, using: key))
            for i in result.indices { result[i] ^= u[i] }
        }
        return result
    }
}

enum Base64 {
    static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }
    static func decode(_ text: String) -> [UInt8]? { Data(base64Encoded: text).map { Array($0) } }
}
