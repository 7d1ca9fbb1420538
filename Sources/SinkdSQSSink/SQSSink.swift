import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SinkdCore
import SinkdDelivery

/// `sqs:NAME` and `sqs:https://...queue URL`: SendMessageBatch over the AWS JSON protocol, signed
/// with SigV4, on one keep-alive connection pool shared by the family's sinks.
///
/// Per entry: Successful → delivered; Failed with SenderFault → permanent (code and message in the
/// dead letter); Failed otherwise → retried. Whole requests: throttling and 5xx → retried;
/// credential and signature errors → the sink pauses (never dead-letters); a missing queue →
/// created when `create_missing_queues`, else its records are dead-lettered; no answer at all → the
/// sink pauses and reconnects.
public final class SQSSinkFamily: SinkFamily, Sendable {
    public let name = ConfigFamily.sqs
    let config: SQSSinkConfig
    let client: HTTPClient
    let endpoint: URL
    let region: String
    /// Where the credentials come from (or why there are none: every sink pauses with that reason).
    let credentials: Result<AWSCredentialProvider, SQSCredentials.ResolveError>
    let timeouts: AWSRequestTimeouts
    private let queueURLs = NIOLockedValueBox<[String: String]>([:])

    public init(
        config: SQSSinkConfig, environment: [String: String] = ProcessInfo.processInfo.environment,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "sinkd.sqs"),
        readFile: @escaping @Sendable (String) -> String? = SQSCredentials.defaultReadFile,
        timeouts: AWSRequestTimeouts = AWSRequestTimeouts()
    ) {
        self.config = config
        self.timeouts = timeouts
        let region =
            config.region.isEmpty
            ? (environment["AWS_REGION"].flatMap { $0.isEmpty ? nil : $0 } ?? environment["AWS_DEFAULT_REGION"].flatMap
            { $0.isEmpty ? nil : $0 } ?? "us-east-1") : config.region
        self.region = region
        endpoint = URL(string: config.endpoint.isEmpty ? "https://sqs.\(region).amazonaws.com/" : config.endpoint)!
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, config.options.poolSize))
        configuration.redirectConfiguration = .disallow
        configuration.timeout.connect = .seconds(5)
        let client = HTTPClient(eventLoopGroup: group, configuration: configuration)
        self.client = client
        let stsEndpoint =
            !config.stsEndpoint.isEmpty
            ? config.stsEndpoint
            : (environment["AWS_ENDPOINT_URL_STS"].flatMap { $0.isEmpty ? nil : $0 }
                ?? "https://sts.\(region).amazonaws.com/")
        credentials = SQSCredentials.resolve(config: config, environment: environment, readFile: readFile).map {
            source in
            AWSCredentialProvider(
                source: source,
                fetcher: AWSCredentialFetcher(
                    client: client, region: region, stsEndpoint: stsEndpoint, readFile: readFile, timeouts: timeouts),
                logger: logger)
        }
    }

    /// SQS refused the credentials (ExpiredToken, a revoked session): temporary ones are fetched
    /// anew before the next request rather than used until their stated expiry.
    func credentialsRefused() {
        if case .success(let provider) = credentials { provider.invalidate() }
    }

    /// A signer with the current credentials (fetched or refreshed as needed).
    func signer() async throws(SinkConnectionError) -> SigV4Signer {
        switch credentials {
        case .failure(let error): throw SinkConnectionError(error.description)
        case .success(let provider):
            return SigV4Signer(credentials: try await provider.credentials(), region: region, service: "sqs")
        }
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    public var maxMessageBytes: Int { config.maxMessageBytes == 0 ? config.maxBatchBytes : config.maxMessageBytes }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        SinkLimits(
            maxBatchCount: min(10, max(1, options.batchSize)), maxBatchBytes: config.maxBatchBytes,
            maxMessageBytes: maxMessageBytes)
    }

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
        guard case .sqsQueue(let location) = address.target else {
            throw SinkConnectionError("\(address) is not an SQS sink")
        }
        if case .failure(let error) = credentials { throw SinkConnectionError(error.description) }
        let queueName = location.hasPrefix("http") ? (URL(string: location)?.lastPathComponent ?? location) : location
        return SQSQueueClient(
            family: self, location: location, queueName: queueName,
            entryOptions: .init(
                fifo: queueName.hasSuffix(".fifo"), groupIDTemplate: config.fifoGroupID,
                messageAttributes: config.messageAttributes, sink: address.identity))
    }

    /// ApproximateNumberOfMessages of a queue (benchmarks and tests); creates it first if asked.
    public func approximateMessages(queue: String, create: Bool) async throws -> Int {
        let signer = try await signer()
        let lookup = try await call(
            create ? .createQueue : .getQueueUrl,
            body: create
                ? SQSProtocol.createQueue(name: queue) : SQSProtocol.getQueueUrl(name: queue, ownerAccountID: ""),
            signer: signer)
        guard let url = SQSProtocol.parseQueueURL(lookup.body) else { return 0 }
        let response = try await call(
            .getQueueAttributes,
            body: SQSProtocol.json(["QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]]), signer: signer
        )
        let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        return ((object?["Attributes"] as? [String: String])?["ApproximateNumberOfMessages"]).flatMap(Int.init) ?? 0
    }

    func cachedURL(_ name: String) -> String? { queueURLs.withLockedValue { $0[name] } }
    func cache(_ name: String, _ url: String?) { queueURLs.withLockedValue { $0[name] = url } }

    /// One signed JSON-protocol call. A response of any status is returned; only a request that got
    /// no response throws.
    /// `maxResponseBytes`: what the answer may hold (1 MiB: a SendMessageBatch answer lists at most
    /// 10 entries; ReceiveMessage, which only tests use, can carry 10 messages of 1 MiB).
    func call(
        _ action: SQSProtocol.Action, body: [UInt8], signer: SigV4Signer, maxResponseBytes: Int = 1 << 20
    ) async throws(SinkConnectionError) -> (status: Int, body: [UInt8], queryError: String?) {
        let host = endpoint.host.map { h in endpoint.port.map { "\(h):\($0)" } ?? h } ?? ""
        let path = endpoint.path.isEmpty ? "/" : endpoint.path
        var headers: [(String, String)] = [
            ("Host", host), ("Content-Type", SQSProtocol.contentType), ("X-Amz-Target", action.target),
        ]
        headers += signer.sign(method: "POST", path: path, headers: headers, body: body, date: Date())
        var request = HTTPClientRequest(url: endpoint.absoluteString)
        request.method = .POST
        for (name, value) in headers where name != "Host" { request.headers.add(name: name, value: value) }
        request.body = .bytes(body)
        do {
            let response = try await client.fetch(request, timeout: timeouts.sqs, maxBodyBytes: maxResponseBytes)
            return (response.status, response.body, response.headers.first(name: "x-amzn-query-error"))
        } catch {
            throw SinkConnectionError("SQS \(endpoint.absoluteString): \(error)")
        }
    }
}

enum QueueResolution {
    case url(String)
    /// What every record of the batch gets instead.
    case failed(DeliveryOutcome)
}

struct SQSQueueClient: SinkClient {
    let family: SQSSinkFamily
    /// The sink's location: a queue name, or a queue URL used as is.
    let location: String
    let queueName: String
    let entryOptions: SQSProtocol.EntryOptions

    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let queueURL: String
        switch try await resolveQueueURL() {
        case .url(let url): queueURL = url
        case .failed(let outcome): return batch.map { _ in outcome }
        }
        let body = SQSProtocol.sendMessageBatch(queueURL: queueURL, records: batch.map(\.record), options: entryOptions)
        let response = try await family.call(.sendMessageBatch, body: body, signer: try await family.signer())
        guard response.status == 200 else {
            let error = SQSProtocol.parseError(
                status: response.status, body: response.body, queryErrorHeader: response.queryError)
            switch error.kind {
            case .queueDoesNotExist:
                family.cache(location, nil)  // looked up again (or created) on the next attempt
                return batch.map { _ in
                    family.config.createMissingQueues
                        ? .retryable("\(error)") : .permanent("queue \(queueName) does not exist (\(error))")
                }
            case .credentials:
                family.credentialsRefused()
                throw SinkConnectionError("SQS refused the credentials: \(error)")
            case .retryable:
                return batch.map { _ in .retryable("\(error)") }
            case .permanent where batch.count > 1:
                // Refused as a whole, which one record can cause (a value SQS does not take):
                // each is sent alone, so only the records SQS refuses are dead-lettered.
                var outcomes: [DeliveryOutcome] = []
                for item in batch { outcomes += try await send([item]) }
                return outcomes
            case .permanent:
                return batch.map { _ in .permanent("\(error)") }
            }
        }
        guard let result = SQSProtocol.parseBatchResult(response.body) else {
            return batch.map { _ in
                .retryable("SQS answered SendMessageBatch with something that is not its JSON result")
            }
        }
        return batch.indices.map { index in
            if result.successful.contains(index) { return .delivered }
            if let failure = result.failed[index] {
                let text = "\(failure.code): \(failure.message)"
                return failure.senderFault ? .permanent(text) : .retryable(text)
            }
            return .retryable("SQS returned no result for this entry")
        }
    }

    /// The queue URL: the location itself, the cache, GetQueueUrl, or CreateQueue. A failure is the
    /// outcome every record of the batch gets.
    private func resolveQueueURL() async throws(SinkConnectionError) -> QueueResolution {
        if location.hasPrefix("http") { return .url(location) }
        if let cached = family.cachedURL(location) { return .url(cached) }
        let lookup = try await family.call(
            .getQueueUrl, body: SQSProtocol.getQueueUrl(name: queueName, ownerAccountID: family.config.accountID),
            signer: try await family.signer())
        if lookup.status == 200, let url = SQSProtocol.parseQueueURL(lookup.body) {
            family.cache(location, url)
            return .url(url)
        }
        let error = SQSProtocol.parseError(
            status: lookup.status, body: lookup.body, queryErrorHeader: lookup.queryError)
        switch error.kind {
        case .queueDoesNotExist:
            guard family.config.createMissingQueues else {
                return .failed(
                    .permanent("queue \(queueName) does not exist (sinks.sqs.create_missing_queues is false): \(error)")
                )
            }
            let created = try await family.call(
                .createQueue, body: SQSProtocol.createQueue(name: queueName), signer: try await family.signer())
            if created.status == 200, let url = SQSProtocol.parseQueueURL(created.body) {
                family.cache(location, url)
                return .url(url)
            }
            let createError = SQSProtocol.parseError(
                status: created.status, body: created.body, queryErrorHeader: created.queryError)
            if createError.kind == .credentials {
                family.credentialsRefused()
                throw SinkConnectionError("SQS refused the credentials: \(createError)")
            }
            return .failed(
                createError.kind == .permanent
                    ? .permanent("cannot create queue \(queueName): \(createError)")
                    : .retryable("cannot create queue \(queueName): \(createError)"))
        case .credentials:
            family.credentialsRefused()
            throw SinkConnectionError("SQS refused the credentials: \(error)")
        case .retryable:
            return .failed(.retryable("GetQueueUrl \(queueName): \(error)"))
        case .permanent:
            return .failed(.permanent("GetQueueUrl \(queueName): \(error)"))
        }
    }

    func close() async {}
}
