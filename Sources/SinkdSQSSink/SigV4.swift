import Crypto
import Foundation

/// AWS Signature Version 4 (HMAC-SHA256), I/O-free: the canonical request, the string to sign,
/// the derived signing key and the Authorization header, for one HTTP request.
/// https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
public struct SigV4Signer: Sendable {
    public struct Credentials: Sendable, Equatable {
        public var accessKeyID: String
        public var secretAccessKey: String
        public var sessionToken: String?

        public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
            self.accessKeyID = accessKeyID
            self.secretAccessKey = secretAccessKey
            self.sessionToken = sessionToken
        }
    }

    public var credentials: Credentials
    public var region: String
    public var service: String

    public init(credentials: Credentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The headers to add to the request: X-Amz-Date, X-Amz-Security-Token (with a session
    /// token), Authorization. `headers` must already hold every header to sign, Host included;
    /// `path` is the URI path (already URI-encoded as it will be sent), `query` the raw query.
    public func sign(
        method: String, path: String, query: String = "", headers: [(String, String)], body: [UInt8], date: Date
    ) -> [(String, String)] {
        let amzDate = Self.amzDate(date)
        var all = headers
        all.append(("X-Amz-Date", amzDate))
        if let token = credentials.sessionToken, !token.isEmpty { all.append(("X-Amz-Security-Token", token)) }
        let (canonical, signedHeaders) = Self.canonicalRequest(
            method: method, path: path, query: query, headers: all, payloadHash: Self.hex(SHA256.hash(data: body)))
        let scope = "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
        let stringToSign =
            "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Self.hex(SHA256.hash(data: Array(canonical.utf8))))"
        let signature = Self.hex(
            HMAC<SHA256>.authenticationCode(
                for: Array(stringToSign.utf8), using: signingKey(day: String(amzDate.prefix(8)))))
        var out: [(String, String)] = [("X-Amz-Date", amzDate)]
        if let token = credentials.sessionToken, !token.isEmpty { out.append(("X-Amz-Security-Token", token)) }
        out.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"
            ))
        return out
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request").
    func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Array(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        return key
    }

    /// The canonical request and the signed-headers list. Header names lower-cased and sorted,
    /// values trimmed with inner runs of spaces collapsed; repeated headers joined with ','.
    static func canonicalRequest(
        method: String, path: String, query: String, headers: [(String, String)], payloadHash: String
    ) -> (String, String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            let trimmed = value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            merged[name.lowercased(), default: []].append(trimmed)
        }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        let canonical = [
            method, path.isEmpty ? "/" : path, canonicalQuery(query), canonicalHeaders, signedHeaders, payloadHash,
        ].joined(separator: "\n")
        return (canonical, signedHeaders)
    }

    /// Query parameters sorted by name then value, each name and value URI-encoded (RFC 3986 unreserved kept).
    static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        let pairs = query.split(separator: "&").map { part -> (String, String) in
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            return (uriEncode(name), uriEncode(value))
        }
        return pairs.sorted { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }.map { "\($0.0)=\($0.1)" }.joined(
            separator: "&")
    }

    static func uriEncode(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(Character(UnicodeScalar(byte)))
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
            parts.tm_min, parts.tm_sec)
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        var out = ""
        for b in digest { out += String(format: "%02x", b) }
        return out
    }
}
