import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import SinkdCore
import SinkdDelivery
import SinkdIngest
import SinkdTestSupport
@testable import SinkdSQSSink
import SinkdTestServers

/// A small HTTP server playing ECS's/EKS's container credentials endpoint or EC2's instance
/// metadata service. Neither can run here (they are AWS's own agents on link-local addresses), so
/// the tests serve what AWS documents they answer; every request is recorded.
final class CredentialEndpoint: Sendable {
    struct Request: Sendable {
        var method: String
        var uri: String
        var headers: [String: String]
        var at: Date
    }

    let channel: Channel
    private let recorded = NIOLockedValueBox<[Request]>([])
    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)" }
    var requests: [Request] { recorded.withLockedValue { $0 } }

    /// Answers `delay` after each request (a slow agent).
    let delay: TimeAmount

    init(delay: TimeAmount = .zero, _ answer: @escaping @Sendable (Request) -> (status: Int, body: String)) throws {
        self.delay = delay
        let recorded = self.recorded
        channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandler(
                        Handler(answer: answer, recorded: recorded, delay: delay))
                }
            }
            .bind(host: "127.0.0.1", port: 0).wait()
    }

    deinit { try? channel.close().wait() }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let answer: @Sendable (Request) -> (status: Int, body: String)
        let recorded: NIOLockedValueBox<[Request]>
        let delay: TimeAmount
        var head: HTTPRequestHead?
        init(
            answer: @escaping @Sendable (Request) -> (status: Int, body: String),
            recorded: NIOLockedValueBox<[Request]>, delay: TimeAmount
        ) {
            self.answer = answer
            self.recorded = recorded
            self.delay = delay
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let head else { return }
                var headers: [String: String] = [:]
                for (name, value) in head.headers { headers[name.lowercased()] = value }
                let request = Request(method: head.method.rawValue, uri: head.uri, headers: headers, at: Date())
                recorded.withLockedValue { $0.append(request) }
                let (status, body) = answer(request)
                var out = HTTPHeaders()
                out.add(name: "Content-Length", value: "\(body.utf8.count)")
                let respond = { [self] in
                    context.write(
                        wrapOutboundOut(
                            .head(
                                HTTPResponseHead(
                                    version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: out))),
                        promise: nil)
                    context.write(
                        wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))),
                        promise: nil)
                    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
                }
                if delay == .zero {
                    respond()
                } else {
                    context.eventLoop.assumeIsolated().scheduleTask(in: delay, respond)
                }
            }
        }
    }

    /// The JSON the container endpoint and IMDS answer. Without `Token` here: the tests serve a
    /// moto user's long-term keys, and moto refuses a session token it did not issue.
    static func credentialsJSON(key: String, secret: String, expiration: Date) -> String {
        let f = ISO8601DateFormatter()
        return
            #"{"Code":"Success","Type":"AWS-HMAC","AccessKeyId":"\#(key)","SecretAccessKey":"\#(secret)","Expiration":"\#(f.string(from: expiration))"}"#
    }
}

/// The SDKs' credential chain, chosen without I/O: every source, its place in the order, and the
/// profile forms of the shared files.
@Suite(.blockingThreads) struct CredentialChainTests {
    static func resolve(
        _ env: [String: String], files: [String: String] = [:], _ configure: (inout SQSSinkConfig) -> Void = { _ in }
    ) -> Result<SQSCredentials.Source, SQSCredentials.ResolveError> {
        var config = SQSSinkConfig()
        configure(&config)
        return SQSCredentials.resolve(config: config, environment: env, readFile: { files[$0] })
    }

    static let home = ["HOME": "/home/u"]
    static let credentialsFile = """
        [default]
        aws_access_key_id = DEF
        aws_secret_access_key = defsecret
        [base]
        aws_access_key_id=BASE
        aws_secret_access_key=basesecret
        aws_session_token=tok
        """
    static let configFile = """
        [profile app]
        role_arn = arn:aws:iam::123456789012:role/app
        source_profile = base
        external_id = ext-1
        role_session_name = orders
        duration_seconds = 1800
        [profile chained]
        role_arn = arn:aws:iam::123456789012:role/second
        source_profile = app
        [profile loop1]
        role_arn = arn:aws:iam::1:role/a
        source_profile = loop2
        [profile loop2]
        role_arn = arn:aws:iam::1:role/b
        source_profile = loop1
        [profile onInstance]
        role_arn = arn:aws:iam::1:role/i
        credential_source = Ec2InstanceMetadata
        [profile fromEnv]
        role_arn = arn:aws:iam::1:role/e
        credential_source = Environment
        [profile irsa]
        role_arn = arn:aws:iam::1:role/w
        web_identity_token_file = /var/run/token
        [profile proc]
        credential_process = /usr/local/bin/get-creds --role x
        [profile sso]
        sso_session = corp
        sso_account_id = 1
        [profile base]
        region = eu-west-1
        """
    static var files: [String: String] {
        ["/home/u/.aws/credentials": credentialsFile, "/home/u/.aws/config": configFile]
    }

    @Test func theOrderIsTheJavaSDKs() throws {
        let everything = Self.home.merging([
            "AWS_ACCESS_KEY_ID": "ENV", "AWS_SECRET_ACCESS_KEY": "envsecret",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn:aws:iam::1:role/w",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
        ]) { $1 }
        let fromConfig = try Self.resolve(everything, files: Self.files) {
            $0.accessKeyID = "CFG"; $0.secretAccessKey = "cfgsecret"
        }.get()
        #expect(
            fromConfig
                == .fixed(.init(accessKeyID: "CFG", secretAccessKey: "cfgsecret"), origin: "sinks.sqs configuration"))
        #expect(
            try Self.resolve(everything, files: Self.files).get()
                == .fixed(
                    .init(accessKeyID: "ENV", secretAccessKey: "envsecret"), origin: "environment (AWS_ACCESS_KEY_ID)"))
        var env = everything
        env["AWS_ACCESS_KEY_ID"] = nil
        #expect(
            try Self.resolve(env, files: Self.files).get()
                == .webIdentity(
                    roleARN: "arn:aws:iam::1:role/w", tokenFile: "/t", sessionName: "sinkd", origin: "environment"))
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = nil
        #expect(
            try Self.resolve(env, files: Self.files).get()
                == .fixed(
                    .init(accessKeyID: "DEF", secretAccessKey: "defsecret"),
                    origin: "profile default in /home/u/.aws/credentials"))
        #expect(
            try Self.resolve(env).get()
                == .container(url: "http://169.254.170.2/v2/credentials/x", tokenFile: nil, token: nil))
        env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = nil
        #expect(try Self.resolve(env).get() == .instanceMetadata(endpoint: "http://169.254.169.254"))
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = "http://127.0.0.1:9"
        #expect(try Self.resolve(env).get() == .instanceMetadata(endpoint: "http://127.0.0.1:9"))
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        guard case .failure(let none) = Self.resolve(env) else {
            Issue.record("nothing configured must be an error"); return
        }
        #expect(
            none.description.contains("no AWS credentials") && none.description.contains("AWS_EC2_METADATA_DISABLED"))
    }

    @Test func profilesOfTheSharedFiles() throws {
        func profile(
            _ name: String, _ env: [String: String] = [:]
        ) -> Result<SQSCredentials.Source, SQSCredentials.ResolveError> {
            Self.resolve(Self.home.merging(env) { $1 }, files: Self.files) { $0.profile = name }
        }
        let base = SQSCredentials.Source.fixed(
            .init(accessKeyID: "BASE", secretAccessKey: "basesecret", sessionToken: "tok"),
            origin: "profile base in /home/u/.aws/credentials and /home/u/.aws/config")
        #expect(try profile("base").get() == base)
        let app = SQSCredentials.Source.assumeRole(
            roleARN: "arn:aws:iam::123456789012:role/app", sessionName: "orders", externalID: "ext-1",
            durationSeconds: 1800,
            source: base, origin: "profile app in /home/u/.aws/config")
        #expect(try profile("app").get() == app)
        #expect(
            try profile("chained").get()
                == .assumeRole(
                    roleARN: "arn:aws:iam::123456789012:role/second", sessionName: "sinkd", externalID: nil,
                    durationSeconds: nil,
                    source: app, origin: "profile chained in /home/u/.aws/config"))
        guard case .failure(let loop) = profile("loop1") else { Issue.record("a loop must be refused"); return }
        #expect(loop.description.contains("loop1 -> loop2 -> loop1"))
        guard case .assumeRole(_, _, _, _, .instanceMetadata, _) = try profile("onInstance").get() else {
            Issue.record("credential_source Ec2InstanceMetadata"); return
        }
        guard case .failure(let noEnv) = profile("fromEnv") else {
            Issue.record("credential_source Environment without the variables"); return
        }
        #expect(noEnv.description.contains("AWS_ACCESS_KEY_ID"))
        guard
            case .assumeRole(_, _, _, _, .fixed(let keys, _), _) = try profile(
                "fromEnv", ["AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "S"]
            ).get()
        else {
            Issue.record("credential_source Environment"); return
        }
        #expect(keys.accessKeyID == "E")
        #expect(
            try profile("irsa").get()
                == .webIdentity(
                    roleARN: "arn:aws:iam::1:role/w", tokenFile: "/var/run/token", sessionName: "sinkd",
                    origin: "profile irsa in /home/u/.aws/config"))
        #expect(
            try profile("proc").get()
                == .process(command: "/usr/local/bin/get-creds --role x", origin: "profile proc in /home/u/.aws/config")
        )
        guard case .failure(let sso) = profile("sso") else {
            Issue.record("SSO is not supported and must say so"); return
        }
        #expect(sso.description.contains("SSO profile"))
        // AWS_PROFILE naming a profile that does not exist is an error, not a silent fall-through
        // to instance metadata.
        guard
            case .failure(let missing) = Self.resolve(
                Self.home.merging(["AWS_PROFILE": "nope"]) { $1 }, files: Self.files)
        else { Issue.record("a missing profile"); return }
        #expect(missing.description.contains("AWS profile nope"))
        // The description logged never carries a secret.
        #expect(!"\(app)".contains("basesecret") && !"\(app)".contains("tok"))
    }

    @Test func containerURIsFollowTheSDKsRules() throws {
        #expect(
            try Self.resolve([
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/run/eks-token",
            ]).get()
                == .container(url: "http://169.254.170.23/v1/credentials", tokenFile: "/var/run/eks-token", token: nil))
        #expect(
            try Self.resolve([
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:8080/c",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "abc",
            ]).get()
                == .container(url: "http://127.0.0.1:8080/c", tokenFile: nil, token: "abc"))
        #expect(
            try Self.resolve(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://creds.example.com/c"]).get()
                == .container(url: "https://creds.example.com/c", tokenFile: nil, token: nil))
        guard
            case .failure(let clear) = Self.resolve(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://creds.example.com/c"]
            )
        else { Issue.record("http to elsewhere must be refused"); return }
        #expect(clear.description.contains("must be https://"))
    }

    /// Refreshed in the background before expiry; only stale credentials make a request wait.
    @Test func theCacheRefreshesBeforeExpiryWithoutWaiting() {
        var cache = CredentialCache()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let a = SigV4Signer.Credentials(accessKeyID: "A", secretAccessKey: "a")
        let b = SigV4Signer.Credentials(accessKeyID: "B", secretAccessKey: "b")
        #expect(cache.decide(now: t0) == .mustFetch)
        cache.fetched(.init(credentials: a, expiration: t0.addingTimeInterval(3600)), at: t0)
        #expect(cache.decide(now: t0.addingTimeInterval(3000)) == .use(a))
        // 5 minutes before expiry: use these, and fetch new ones once (not once per request).
        #expect(cache.decide(now: t0.addingTimeInterval(3301)) == .useAndRefresh(a))
        #expect(cache.decide(now: t0.addingTimeInterval(3302)) == .use(a))
        // The background fetch failed: still these, tried again 30 s later.
        cache.refreshFailed(at: t0.addingTimeInterval(3310))
        #expect(cache.decide(now: t0.addingTimeInterval(3320)) == .use(a))
        #expect(cache.decide(now: t0.addingTimeInterval(3341)) == .useAndRefresh(a))
        cache.refreshFailed(at: t0.addingTimeInterval(3341))
        // In the last minute they are stale: wait for new ones.
        #expect(cache.decide(now: t0.addingTimeInterval(3541)) == .mustFetch)
        cache.fetched(.init(credentials: b, expiration: nil), at: t0.addingTimeInterval(3542))
        #expect(cache.decide(now: t0.addingTimeInterval(99_999)) == .use(b), "credentials without an expiry are kept")
        // A short life (15 minutes from STS): refreshed in its second half, stale in its last tenth.
        cache.fetched(.init(credentials: a, expiration: t0.addingTimeInterval(900)), at: t0)
        #expect(cache.decide(now: t0.addingTimeInterval(299)) == .use(a))
        #expect(cache.decide(now: t0.addingTimeInterval(601)) == .useAndRefresh(a))
        #expect(cache.decide(now: t0.addingTimeInterval(841)) == .mustFetch)
        cache.invalidate()
        #expect(cache.decide(now: t0) == .mustFetch)
    }

    @Test func answersOfTheSources() throws {
        let expiring = try AWSCredentialFetcher.parseJSONCredentials(
            Array(
                #"{"Version":1,"AccessKeyId":"K","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-12-01T20:37:37Z"}"#
                    .utf8),
            what: "p", tokenKey: "SessionToken", requireVersion: true)
        #expect(
            expiring
                == .init(
                    credentials: .init(accessKeyID: "K", secretAccessKey: "S", sessionToken: "T"),
                    expiration: Date(timeIntervalSince1970: 1_796_157_457)))
        #expect(AWSCredentialFetcher.parseDate("2026-12-01T20:37:37.758203Z") != nil)
        #expect(throws: SinkConnectionError.self) {
            try AWSCredentialFetcher.parseJSONCredentials(
                Array(#"{"AccessKeyId":"K","SecretAccessKey":"S"}"#.utf8), what: "p", requireVersion: true)
        }
        #expect(throws: SinkConnectionError.self) {
            try AWSCredentialFetcher.parseJSONCredentials(
                Array(#"{"Code":"Failure","Message":"no role"}"#.utf8), what: "imds")
        }
        #expect(throws: SinkConnectionError.self) {
            try AWSCredentialFetcher.parseJSONCredentials(Array("not json".utf8), what: "container")
        }
        #expect(
            AWSCredentialFetcher.xmlValue("SecretAccessKey", in: "<a><SecretAccessKey>x&amp;y/+z</SecretAccessKey></a>")
                == "x&y/+z")
    }
}

/// Each source end to end: sinkd fetches credentials and moto, with authentication on
/// (INITIAL_NO_AUTH_ACTION_COUNT: only the setup requests go unchecked), accepts what they sign.
/// STS and SQS are moto's; the container endpoint and IMDS are `CredentialEndpoint`s.
@Suite(.serialized, .blockingThreads) struct CredentialSourcesTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// moto with authentication after the setup's `requests`, set up by Fixtures/moto_iam.py.
    static func authenticatingMoto(
        _ mode: String, requests: Int, extraFree: Int = 0
    ) throws -> (MotoServer, [String: String]) {
        let moto = try MotoServer(environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "\(requests + extraFree)"])
        let output = try Python.run([fixtures.appendingPathComponent("moto_iam.py").path, moto.endpoint, mode])
        let object = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: String] ?? [:]
        return (moto, object)
    }

    static func family(_ moto: MotoServer, environment: [String: String], logs: CapturedLogs) -> SQSSinkFamily {
        var config = SQSSinkConfig()
        config.endpoint = moto.endpoint
        config.stsEndpoint = moto.endpoint
        config.region = "us-east-1"
        return SQSSinkFamily(
            config: config, environment: environment.merging(["AWS_EC2_METADATA_DISABLED": "true"]) { old, _ in old },
            logger: logs.logger())
    }

    /// Runs `body` and shuts the family's HTTP client down whatever happens (AsyncHTTPClient traps
    /// on a client dropped without shutdown).
    static func using(_ family: SQSSinkFamily, _ body: (SQSSinkFamily) async throws -> Void) async throws {
        do {
            try await body(family)
        } catch {
            await family.shutdown()
            throw error
        }
        await family.shutdown()
    }

    static func deliver(_ family: SQSSinkFamily, queue: String, count: Int = 3) async throws {
        let sink = "sqs:\(queue)"
        let client = try family.makeClient(
            for: try SinkAddress.parse(identity: sink), options: ConfigFamily.sqs.defaultOptions)
        #expect(
            try await client.send(MotoTests.records(queue, count, sink: sink))
                == Array(repeating: .delivered, count: count))
        #expect(try await family.receiveAll(queue: queue, count: count).count == count)
    }

    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sinkd-aws-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// EKS IRSA: the token file and role from the environment, STS AssumeRoleWithWebIdentity.
    /// moto's STS takes that call only unauthenticated (it requires a signature on every call once
    /// authentication is on), so it is the one request past the setup left free.
    @Test func webIdentityFromTheEnvironment() async throws {
        let (moto, setup) = try Self.authenticatingMoto("role", requests: 2, extraFree: 1)
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenFile = dir.appendingPathComponent("token").path
        try "eyJhbGciOiJSUzI1NiJ9.projected-service-account-token".write(
            toFile: tokenFile, atomically: true, encoding: .utf8)
        let logs = CapturedLogs()
        try await Self.using(
            Self.family(
                moto,
                environment: [
                    "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile, "AWS_ROLE_ARN": try #require(setup["role_arn"]),
                ], logs: logs)
        ) { family in
            try await Self.deliver(family, queue: "irsa")
            let provider = try family.credentials.get()
            #expect(
                provider.cached?.value.credentials.accessKeyID.hasPrefix("ASIA") == true,
                "temporary credentials from STS")
            #expect(provider.cached?.value.expiration != nil)
            let notices = logs.entries.filter { $0.message == "AWS credentials for the sqs family" }
            #expect(notices.count == 1, "the source is logged once")
            #expect(notices.first?.metadata["source"]?.description.contains("web identity") == true)
            let all = logs.entries.map { "\($0.message) \($0.metadata)" }.joined()
            #expect(!all.contains(provider.cached!.value.credentials.secretAccessKey), "never the secret")
        }
    }

    /// `role_arn` + `source_profile`: AssumeRole signed with the base profile's keys (a user allowed
    /// nothing but sts:AssumeRole), then SQS with the role's. The base keys alone are refused, so
    /// the delivery proves the role's credentials signed it.
    @Test func assumedRoleWithASourceProfile() async throws {
        let (moto, setup) = try Self.authenticatingMoto("assume-user", requests: 5)
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try
            "[base]\naws_access_key_id = \(setup["access_key_id"]!)\naws_secret_access_key = \(setup["secret_access_key"]!)\n"
            .write(to: dir.appendingPathComponent("credentials"), atomically: true, encoding: .utf8)
        try "[profile app]\nrole_arn = \(setup["role_arn"]!)\nsource_profile = base\nrole_session_name = sinkd-test\n"
            .write(to: dir.appendingPathComponent("config"), atomically: true, encoding: .utf8)
        let env = [
            "AWS_SHARED_CREDENTIALS_FILE": dir.appendingPathComponent("credentials").path,
            "AWS_CONFIG_FILE": dir.appendingPathComponent("config").path,
        ]
        let logs = CapturedLogs()
        try await Self.using(Self.family(moto, environment: env.merging(["AWS_PROFILE": "base"]) { $1 }, logs: logs)) {
            baseOnly in
            let refused = await #expect(throws: SinkConnectionError.self) {
                _ = try await baseOnly.makeClient(
                    for: try SinkAddress.parse(identity: "sqs:roles"), options: ConfigFamily.sqs.defaultOptions
                ).send(MotoTests.records("b", 1, sink: "sqs:roles"))
            }
            #expect(refused?.message.contains("AccessDenied") == true, "\(refused?.message ?? "")")
        }
        try await Self.using(Self.family(moto, environment: env.merging(["AWS_PROFILE": "app"]) { $1 }, logs: logs)) {
            family in
            try await Self.deliver(family, queue: "roles")
            #expect(
                logs.entries.contains {
                    $0.message == "AWS credentials for the sqs family"
                        && "\($0.metadata["source"] ?? "")".contains("assumed role \(setup["role_arn"]!)")
                })
        }
    }

    /// ECS/EKS container credentials with the authorization token file (read on every fetch), a
    /// short expiry and a slow agent (1.5 s per answer, longer than the last stretch in which
    /// credentials count as stale): while sends go on, new credentials are fetched in the
    /// background and arrive before the old ones expire. Fetching only once they are stale would
    /// get them after the expiry (and hold the sends meanwhile).
    @Test func containerCredentialsAreRefreshedBeforeTheyExpire() async throws {
        let (moto, setup) = try Self.authenticatingMoto("sqs-user", requests: 3)
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tokenFile = dir.appendingPathComponent("eks-pod-identity-token").path
        try "pod-identity-token-1".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let lifetime: TimeInterval = 8
        let expirations = NIOLockedValueBox<[Date]>([])
        let (key, secret) = (setup["access_key_id"]!, setup["secret_access_key"]!)
        let delay = 1.5
        let endpoint = try CredentialEndpoint(delay: .milliseconds(Int64(delay * 1000))) { request in
            guard request.uri == "/v1/credentials",
                request.headers["authorization"]?.hasPrefix("pod-identity-token") == true
            else { return (401, "{}") }
            let expiry = Date().addingTimeInterval(lifetime)
            expirations.withLockedValue { $0.append(expiry) }
            return (200, CredentialEndpoint.credentialsJSON(key: key, secret: secret, expiration: expiry))
        }
        let logs = CapturedLogs()
        try await Self.using(
            Self.family(
                moto,
                environment: [
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI": endpoint.url + "/v1/credentials",
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile,
                ], logs: logs)
        ) { family in
            try await Self.deliver(family, queue: "pods", count: 1)
            try "pod-identity-token-2".write(toFile: tokenFile, atomically: true, encoding: .utf8)  // rotated by the agent
            let sink = "sqs:pods"
            let client = try family.makeClient(
                for: try SinkAddress.parse(identity: sink), options: ConfigFamily.sqs.defaultOptions)
            let deadline = Date().addingTimeInterval(30)
            var sent = 0
            while endpoint.requests.count < 3, Date() < deadline {
                let outcomes = try await client.send(MotoTests.records("p\(sent)", 1, sink: sink))
                #expect(outcomes == [.delivered])
                sent += 1
            }
            let requests = endpoint.requests
            let given = expirations.withLockedValue { $0 }
            #expect(requests.count >= 3, "fetched again before expiry, twice")
            for i in 1..<min(3, given.count) {
                #expect(
                    requests[i].at.addingTimeInterval(delay) < given[i - 1],
                    "fetch \(i + 1) was answered before the credentials of fetch \(i) expired")
            }
            #expect(
                requests.dropFirst().allSatisfy { $0.headers["authorization"] == "pod-identity-token-2" },
                "the token file is read on every fetch")
            #expect(logs.messages(at: .warning).isEmpty, "\(logs.messages(at: .warning))")
        }
    }

    /// IMDSv2 only: a session token by PUT (with its TTL header), then the role's name and its
    /// credentials, each GET carrying the token; a GET without one is refused as EC2 does with
    /// IMDSv1 switched off.
    @Test func instanceMetadataV2() async throws {
        let (moto, setup) = try Self.authenticatingMoto("sqs-user", requests: 3)
        let (key, secret) = (setup["access_key_id"]!, setup["secret_access_key"]!)
        let endpoint = try CredentialEndpoint { request in
            if request.method == "PUT", request.uri == "/latest/api/token" {
                return request.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "21600"
                    ? (200, "imds-session-token") : (400, "")
            }
            guard request.method == "GET", request.headers["x-aws-ec2-metadata-token"] == "imds-session-token" else {
                return (401, "")
            }
            switch request.uri {
            case "/latest/meta-data/iam/security-credentials/": return (200, "sinkd-instance-role\n")
            case "/latest/meta-data/iam/security-credentials/sinkd-instance-role":
                return (
                    200,
                    CredentialEndpoint.credentialsJSON(
                        key: key, secret: secret, expiration: Date().addingTimeInterval(6 * 3600))
                )
            default: return (404, "")
            }
        }
        let logs = CapturedLogs()
        var config = SQSSinkConfig()
        config.endpoint = moto.endpoint
        config.region = "us-east-1"
        try await Self.using(
            SQSSinkFamily(
                config: config, environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": endpoint.url], logger: logs.logger())
        ) { family in
            try await Self.deliver(family, queue: "ec2")
            #expect(
                endpoint.requests.map { "\($0.method) \($0.uri)" } == [
                    "PUT /latest/api/token", "GET /latest/meta-data/iam/security-credentials/",
                    "GET /latest/meta-data/iam/security-credentials/sinkd-instance-role",
                ])
            #expect(logs.entries.contains { "\($0.metadata["source"] ?? "")".contains("IMDSv2") })
        }
    }

    /// credential_process: its JSON signs; a failing process pauses the sink with its stderr.
    @Test func credentialProcess() async throws {
        let (moto, setup) = try Self.authenticatingMoto("sqs-user", requests: 3)
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("get-creds").path
        try """
        #!/bin/sh
        echo run >> "\(dir.path)/runs"
        printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s"}' "$1" "$2"
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        try
            "[profile tool]\ncredential_process = \(script) \(setup["access_key_id"]!) \(setup["secret_access_key"]!)\n[profile broken]\ncredential_process = sh -c 'echo vault is sealed >&2; exit 3'\n"
            .write(to: dir.appendingPathComponent("config"), atomically: true, encoding: .utf8)
        let env = [
            "AWS_CONFIG_FILE": dir.appendingPathComponent("config").path,
            "AWS_SHARED_CREDENTIALS_FILE": dir.appendingPathComponent("none").path,
        ]
        let logs = CapturedLogs()
        try await Self.using(Self.family(moto, environment: env.merging(["AWS_PROFILE": "tool"]) { $1 }, logs: logs)) {
            family in
            try await Self.deliver(family, queue: "proc")
            try await Self.deliver(family, queue: "proc")
            let runs = try String(contentsOfFile: dir.appendingPathComponent("runs").path, encoding: .utf8)
            #expect(runs == "run\n", "credentials without an Expiration are fetched once")
        }
        try await Self.using(Self.family(moto, environment: env.merging(["AWS_PROFILE": "broken"]) { $1 }, logs: logs))
        { broken in
            let error = await #expect(throws: SinkConnectionError.self) {
                _ = try await broken.makeClient(
                    for: try SinkAddress.parse(identity: "sqs:proc"), options: ConfigFamily.sqs.defaultOptions
                ).send(MotoTests.records("x", 1, sink: "sqs:proc"))
            }
            #expect(error?.message.contains("exited with status 3: vault is sealed") == true, "\(error?.message ?? "")")
            #expect(
                logs.messages(at: .warning).contains("cannot get AWS credentials; the sqs sinks pause until they can"))
        }
    }

    /// No instance metadata service (nothing listens): the sink pauses, saying where it looked.
    @Test func anUnreachableSourcePausesTheSinkWithTheReason() async throws {
        var config = SQSSinkConfig()
        config.endpoint = "http://127.0.0.1:\(LoopbackTCP.freePort())"
        try await Self.using(
            SQSSinkFamily(
                config: config,
                environment: ["AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:\(LoopbackTCP.freePort())"])
        ) { family in
            let error = await #expect(throws: SinkConnectionError.self) {
                _ = try await family.makeClient(
                    for: try SinkAddress.parse(identity: "sqs:q"), options: ConfigFamily.sqs.defaultOptions
                ).send(MotoTests.records("x", 1, sink: "sqs:q"))
            }
            #expect(error?.message.contains("/latest/api/token") == true, "\(error?.message ?? "")")
        }
    }
}
