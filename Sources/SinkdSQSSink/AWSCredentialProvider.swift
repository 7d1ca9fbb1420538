import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SinkdDelivery

/// Credentials with the time they stop working (nil: they do not expire).
public struct ExpiringCredentials: Sendable, Equatable {
    public var credentials: SigV4Signer.Credentials
    public var expiration: Date?
    public init(credentials: SigV4Signer.Credentials, expiration: Date?) {
        self.credentials = credentials
        self.expiration = expiration
    }
}

/// When to fetch credentials again, I/O-free. Temporary credentials are fetched again in the
/// background once they enter their refresh window (the last 5 minutes of their life, or the last
/// half of a shorter life) while the current ones keep signing; only credentials about to expire
/// (the last minute, or the last tenth of a shorter life) make a request wait for new ones. A
/// failed background fetch is tried again 30 s later (or at once when they become stale).
public struct CredentialCache: Sendable {
    public struct Entry: Sendable, Equatable {
        public var value: ExpiringCredentials
        public var fetchedAt: Date
    }

    public enum Decision: Sendable, Equatable {
        case use(SigV4Signer.Credentials)
        /// Use these, and start fetching new ones in the background.
        case useAndRefresh(SigV4Signer.Credentials)
        /// Wait for new ones: there are none, or they are about to expire.
        case mustFetch
    }

    public private(set) var entry: Entry?
    public private(set) var refreshing = false
    var retryNotBefore: Date?
    public static let backgroundRetry: TimeInterval = 30

    public init() {}

    public mutating func decide(now: Date) -> Decision {
        guard let entry else { return .mustFetch }
        guard let expiration = entry.value.expiration else { return .use(entry.value.credentials) }
        let lifetime = max(0, expiration.timeIntervalSince(entry.fetchedAt))
        if now >= expiration.addingTimeInterval(-min(60, lifetime / 10)) { return .mustFetch }
        if now >= expiration.addingTimeInterval(-min(300, lifetime / 2)), !refreshing,
            retryNotBefore.map({ now >= $0 }) ?? true
        {
            refreshing = true
            return .useAndRefresh(entry.value.credentials)
        }
        return .use(entry.value.credentials)
    }

    public mutating func fetched(_ value: ExpiringCredentials, at now: Date) {
        entry = Entry(value: value, fetchedAt: now)
        refreshing = false
        retryNotBefore = nil
    }

    public mutating func invalidate() {
        entry = nil
        retryNotBefore = nil
    }

    /// A background fetch failed: the current credentials stay until they are stale.
    public mutating func refreshFailed(at now: Date) {
        refreshing = false
        retryNotBefore = now.addingTimeInterval(Self.backgroundRetry)
    }
}

/// The family's credentials: fetched from their `SQSCredentials.Source`, cached, refreshed before
/// they expire without holding up delivery, shared by every sink of the family. Which source is
/// used is logged once (never a secret); a failure is a `SinkConnectionError`, so the sink pauses
/// and tries again with its reconnect backoff (never a dead letter).
public final class AWSCredentialProvider: Sendable {
    public let source: SQSCredentials.Source
    let fetcher: AWSCredentialFetcher
    let logger: Logger
    private let state = NIOLockedValueBox(State())

    struct State {
        var cache = CredentialCache()
        var inflight: Task<ExpiringCredentials, any Error>?
        var logged = false
        var failing = false
    }

    public init(source: SQSCredentials.Source, fetcher: AWSCredentialFetcher, logger: Logger) {
        self.source = source
        self.fetcher = fetcher
        self.logger = logger
    }

    /// Forget temporary credentials (the service refused them); fixed ones stay.
    public func invalidate() {
        state.withLockedValue { s in
            if s.cache.entry?.value.expiration != nil { s.cache.invalidate() }
        }
    }

    /// The credentials held now (tests).
    public var cached: CredentialCache.Entry? { state.withLockedValue { $0.cache.entry } }

    public func credentials() async throws(SinkConnectionError) -> SigV4Signer.Credentials {
        let (decision, task) = state.withLockedValue {
            s -> (CredentialCache.Decision, Task<ExpiringCredentials, any Error>?) in
            let decision = s.cache.decide(now: Date())
            switch decision {
            case .use: return (decision, nil)
            case .useAndRefresh, .mustFetch:
                if s.inflight == nil { s.inflight = startFetch() }
                return (decision, s.inflight)
            }
        }
        switch decision {
        case .use(let c), .useAndRefresh(let c):
            return c
        case .mustFetch:
            do {
                return try await task!.value.credentials
            } catch let error as SinkConnectionError {
                throw error
            } catch {  // not thrown: the fetch task throws SinkConnectionError only
                throw SinkConnectionError("cannot get AWS credentials from \(source): \(error)")
            }
        }
    }

    /// One fetch, whoever waits for it; its result goes into the cache.
    private func startFetch() -> Task<ExpiringCredentials, any Error> {
        Task { [fetcher, source, logger] in
            do {
                let value = try await fetcher.fetch(source)
                let (firstTime, recovered) = state.withLockedValue { s in
                    s.cache.fetched(value, at: Date())
                    s.inflight = nil
                    defer { s.logged = true; s.failing = false }
                    return (!s.logged, s.failing)
                }
                if firstTime || recovered {
                    var metadata: Logger.Metadata = ["source": "\(source)"]
                    if let expiration = value.expiration { metadata["expires"] = "\(Self.iso(expiration))" }
                    logger.notice(
                        recovered ? "AWS credentials fetched again" : "AWS credentials for the sqs family",
                        metadata: metadata)
                }
                return value
            } catch {
                let (wasFailing, stillValid) = state.withLockedValue { s in
                    s.inflight = nil
                    s.cache.refreshFailed(at: Date())
                    defer { s.failing = true }
                    return (s.failing, s.cache.entry?.value.expiration.map { $0 > Date() } ?? false)
                }
                if !wasFailing {
                    logger.warning(
                        stillValid
                            ? "cannot refresh AWS credentials; signing with the current ones until they expire"
                            : "cannot get AWS credentials; the sqs sinks pause until they can",
                        metadata: ["source": "\(source)", "error": "\(error)"])
                }
                throw SinkConnectionError("cannot get AWS credentials from \(source): \(error)")
            }
        }
    }

    static func iso(_ date: Date) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: date)
    }
}

/// Fetches credentials from one source: STS (AssumeRoleWithWebIdentity unsigned, AssumeRole
/// signed with the source credentials), the container endpoint, the instance metadata service
/// (IMDSv2: a session token PUT, then the role's credentials), or a credential_process.
public struct AWSCredentialFetcher: Sendable {
    let client: HTTPClient
    let region: String
    let stsEndpoint: String
    let readFile: @Sendable (String) -> String?
    let timeouts: AWSRequestTimeouts

    public init(
        client: HTTPClient, region: String, stsEndpoint: String,
        readFile: @escaping @Sendable (String) -> String? = SQSCredentials.defaultReadFile,
        timeouts: AWSRequestTimeouts = AWSRequestTimeouts()
    ) {
        self.client = client
        self.region = region
        self.stsEndpoint = stsEndpoint
        self.readFile = readFile
        self.timeouts = timeouts
    }

    public func fetch(_ source: SQSCredentials.Source) async throws(SinkConnectionError) -> ExpiringCredentials {
        switch source {
        case .fixed(let credentials, _):
            return ExpiringCredentials(credentials: credentials, expiration: nil)
        case .webIdentity(let role, let tokenFile, let sessionName, _):
            guard let token = readFile(tokenFile)?.trimmingCharacters(in: .whitespacesAndNewlines), !token.isEmpty
            else {
                throw SinkConnectionError(
                    "cannot read the web identity token file \(tokenFile) (AWS_WEB_IDENTITY_TOKEN_FILE): check that it exists and that the sinkd user can read it"
                )
            }
            let form = [
                ("Action", "AssumeRoleWithWebIdentity"), ("Version", "2011-06-15"), ("RoleArn", role),
                ("RoleSessionName", sessionName), ("WebIdentityToken", token),
            ]
            return try await sts(form, action: "AssumeRoleWithWebIdentity", signer: nil)
        case .assumeRole(let role, let sessionName, let externalID, let duration, let inner, _):
            let sourceCredentials = try await fetch(inner).credentials
            var form = [
                ("Action", "AssumeRole"), ("Version", "2011-06-15"), ("RoleArn", role),
                ("RoleSessionName", sessionName),
            ]
            if let externalID { form.append(("ExternalId", externalID)) }
            if let duration { form.append(("DurationSeconds", "\(duration)")) }
            return try await sts(
                form, action: "AssumeRole",
                signer: SigV4Signer(credentials: sourceCredentials, region: region, service: "sts"))
        case .process(let command, _):
            return try await runProcess(command)
        case .container(let url, let tokenFile, let token):
            var headers: [(String, String)] = []
            if let tokenFile {
                guard let text = readFile(tokenFile)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty
                else {
                    throw SinkConnectionError(
                        "cannot read the container authorization token file \(tokenFile) (AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)"
                    )
                }
                headers.append(("Authorization", text))
            } else if let token {
                headers.append(("Authorization", token))
            }
            let response = try await http(.GET, url, headers: headers, timeout: timeouts.container)
            guard response.status == 200 else {
                throw SinkConnectionError(
                    "the container credentials endpoint \(url) answered HTTP \(response.status): \(Self.snippet(response.body))"
                )
            }
            return try Self.parseJSONCredentials(response.body, what: "the container credentials endpoint \(url)")
        case .instanceMetadata(let endpoint):
            let base = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
            let tokenResponse = try await http(
                .PUT, base + "/latest/api/token", headers: [("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
                timeout: timeouts.instanceMetadata)
            guard tokenResponse.status == 200, let token = String(bytes: tokenResponse.body, encoding: .utf8),
                !token.isEmpty
            else {
                throw SinkConnectionError(
                    "instance metadata \(base): the IMDSv2 token request answered HTTP \(tokenResponse.status) (sinkd uses IMDSv2 only)"
                )
            }
            let auth = [("X-aws-ec2-metadata-token", token)]
            let roles = try await http(
                .GET, base + "/latest/meta-data/iam/security-credentials/", headers: auth,
                timeout: timeouts.instanceMetadata)
            guard roles.status == 200,
                let role = String(bytes: roles.body, encoding: .utf8)?.split(whereSeparator: \.isNewline).first.map(
                    String.init), !role.isEmpty
            else {
                throw SinkConnectionError(
                    "instance metadata \(base): no IAM role attached to this instance (HTTP \(roles.status)): attach an instance profile"
                )
            }
            let response = try await http(
                .GET, base + "/latest/meta-data/iam/security-credentials/" + role, headers: auth,
                timeout: timeouts.instanceMetadata)
            guard response.status == 200 else {
                throw SinkConnectionError(
                    "instance metadata \(base): the credentials of role \(role) answered HTTP \(response.status)")
            }
            return try Self.parseJSONCredentials(response.body, what: "instance metadata \(base) (role \(role))")
        }
    }

    /// An STS query-protocol call: form-encoded POST, XML answer.
    func sts(
        _ form: [(String, String)], action: String, signer: SigV4Signer?
    ) async throws(SinkConnectionError) -> ExpiringCredentials {
        let body = Array(
            form.map { "\(SigV4Signer.uriEncode($0.0))=\(SigV4Signer.uriEncode($0.1))" }.joined(separator: "&").utf8)
        guard let url = URL(string: stsEndpoint), let host = url.host else {
            throw SinkConnectionError("sinks.sqs.sts_endpoint \(stsEndpoint) is not a URL")
        }
        var headers: [(String, String)] = [
            ("Host", url.port.map { "\(host):\($0)" } ?? host),
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ]
        if let signer {
            headers += signer.sign(
                method: "POST", path: url.path.isEmpty ? "/" : url.path, headers: headers, body: body, date: Date())
        }
        let response = try await http(
            .POST, stsEndpoint, headers: headers.filter { $0.0 != "Host" }, body: body, timeout: timeouts.sts)
        let text = String(decoding: response.body, as: UTF8.self)
        guard response.status == 200 else {
            let code = Self.xmlValue("Code", in: text) ?? "HTTP \(response.status)"
            let message = Self.xmlValue("Message", in: text) ?? Self.snippet(response.body)
            throw SinkConnectionError("STS \(action) at \(stsEndpoint) refused: \(code): \(message)")
        }
        guard let key = Self.xmlValue("AccessKeyId", in: text), let secret = Self.xmlValue("SecretAccessKey", in: text)
        else {
            throw SinkConnectionError("STS \(action) at \(stsEndpoint) answered without credentials")
        }
        return ExpiringCredentials(
            credentials: .init(
                accessKeyID: key, secretAccessKey: secret, sessionToken: Self.xmlValue("SessionToken", in: text)),
            expiration: Self.xmlValue("Expiration", in: text).flatMap(Self.parseDate))
    }

    func http(
        _ method: HTTPMethod, _ url: String, headers: [(String, String)], body: [UInt8]? = nil, timeout: Duration
    ) async throws(SinkConnectionError) -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(body) }
        do {
            let response = try await client.fetch(request, timeout: timeout, maxBodyBytes: 1 << 20)
            return (response.status, response.body)
        } catch {
            throw SinkConnectionError("\(method) \(url): \(error)")
        }
    }

    /// credential_process: `/bin/sh -c COMMAND`, its stdout the JSON of the SDKs' process
    /// protocol (Version 1). Runs on NIO's blocking pool, bounded by `CredentialProcess`: its
    /// own process group killed at 60 s (or when its shell exits), both pipes read together,
    /// stdout capped at 1 MiB.
    func runProcess(_ command: String) async throws(SinkConnectionError) -> ExpiringCredentials {
        let limit = timeouts.credentialProcess
        let result: Result<CredentialProcess.Output, CredentialProcess.Failure>
        do {
            result = try await NIOThreadPool.singleton.runIfActive {
                () -> Result<CredentialProcess.Output, CredentialProcess.Failure> in
                do throws(CredentialProcess.Failure) {
                    return .success(try CredentialProcess.run(command, timeout: limit))
                } catch {
                    return .failure(error)
                }
            }
        } catch {
            throw SinkConnectionError("credential_process could not run: \(error)")
        }
        let output: CredentialProcess.Output
        switch result {
        case .success(let o): output = o
        case .failure(let failure): throw SinkConnectionError(failure.description)
        }
        let stderr = String(decoding: output.stderr.prefix(300), as: UTF8.self).trimmingCharacters(
            in: .whitespacesAndNewlines)
        guard output.status == 0 else {
            let how = output.status.map { "exited with status \($0)" } ?? "was killed by signal \(output.signal ?? 0)"
            throw SinkConnectionError("credential_process \(how)\(stderr.isEmpty ? "" : ": " + stderr)")
        }
        return try Self.parseJSONCredentials(
            output.stdout, what: "credential_process", tokenKey: "SessionToken", requireVersion: true)
    }

    /// The JSON credentials of the container endpoint and IMDS (`Token`) and of credential_process
    /// (`SessionToken`, `Version: 1`).
    static func parseJSONCredentials(
        _ body: [UInt8], what: String, tokenKey: String = "Token", requireVersion: Bool = false
    ) throws(SinkConnectionError) -> ExpiringCredentials {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else {
            throw SinkConnectionError("\(what) answered with something that is not a JSON object")
        }
        if let code = object["Code"] as? String, code != "Success" {
            throw SinkConnectionError("\(what) answered Code \(code): \(object["Message"] as? String ?? "")")
        }
        if requireVersion, (object["Version"] as? Int) != 1 {
            throw SinkConnectionError(
                "\(what) printed JSON without \"Version\": 1 (the only version of the credential process protocol)")
        }
        guard let key = object["AccessKeyId"] as? String, !key.isEmpty,
            let secret = object["SecretAccessKey"] as? String, !secret.isEmpty
        else {
            throw SinkConnectionError("\(what) answered without AccessKeyId and SecretAccessKey")
        }
        let expiration: Date?
        if let text = object["Expiration"] as? String {
            guard let date = parseDate(text) else {
                throw SinkConnectionError("\(what): Expiration \(text) is not an ISO 8601 time")
            }
            expiration = date
        } else {
            expiration = nil
        }
        return ExpiringCredentials(
            credentials: .init(
                accessKeyID: key, secretAccessKey: secret,
                sessionToken: (object[tokenKey] as? String).flatMap { $0.isEmpty ? nil : $0 }), expiration: expiration)
    }

    static func parseDate(_ text: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: text)
    }

    /// The text of the first `<name>` element (XML entities decoded).
    static func xmlValue(_ name: String, in text: String) -> String? {
        guard let open = text.range(of: "<\(name)>"),
            let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex)
        else { return nil }
        return String(text[open.upperBound..<close.lowerBound])
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }

    static func snippet(_ body: [UInt8]) -> String {
        String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
