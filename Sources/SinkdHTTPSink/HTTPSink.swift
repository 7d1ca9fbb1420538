import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import SinkdCore
import SinkdDelivery

/// `http:NAME`: POSTs each message body to `sinks.http.endpoints.NAME` with the configured
/// headers plus `Idempotency-Key` and `X-Sinkd-Message-Id` (the record id). 2xx is delivered;
/// 408, 429 and 5xx are retried (Retry-After honoured); any other status is permanent. A
/// connection that cannot be made or a timeout pauses the sink.
public final class HTTPSinkFamily: SinkFamily, Sendable {
    public let name = ConfigFamily.http
    let config: HTTPSinkConfig
    let client: HTTPClient

    public init(config: HTTPSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.config = config
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, config.options.poolSize))
        configuration.redirectConfiguration = .disallow
        configuration.timeout.connect = .seconds(5)
        self.client = HTTPClient(eventLoopGroup: group, configuration: configuration)
    }

    /// Closes the shared connection pool (daemon shutdown).
    public func shutdown() async {
        try? await client.shutdown()
    }

    public func limits(for address: SinkAddress, options: PipelineOptions) -> SinkLimits {
        SinkLimits(maxBatchCount: options.batchSize, maxBatchBytes: 64 << 20, maxMessageBytes: 64 << 20)
    }

    public func makeClient(for address: SinkAddress, options: PipelineOptions) throws(SinkConnectionError) -> any SinkClient {
        guard case .httpEndpoint(let name) = address.target, let endpoint = config.endpoints[name] else {
            throw SinkConnectionError("http endpoint of \(address) is not configured in sinks.http.endpoints")
        }
        return HTTPEndpointClient(endpoint: endpoint, client: client)
    }
}

struct HTTPEndpointClient: SinkClient {
    let endpoint: HTTPEndpoint
    let client: HTTPClient

    /// One POST per record, the batch's requests concurrently.
    func send(_ batch: [SequencedRecord]) async throws(SinkConnectionError) -> [DeliveryOutcome] {
        let results = await withTaskGroup(of: (Int, Result<DeliveryOutcome, SinkConnectionError>).self) { group in
            for (index, item) in batch.enumerated() {
                group.addTask { (index, await post(item.record)) }
            }
            var out = [Result<DeliveryOutcome, SinkConnectionError>](repeating: .success(.delivered), count: batch.count)
            for await (index, result) in group { out[index] = result }
            return out
        }
        // If no request got through to the server, the connection is the problem.
        if results.allSatisfy({ if case .failure = $0 { true } else { false } }), case .failure(let error) = results[0] {
            throw error
        }
        return results.map { result in
            switch result {
            case .success(let outcome): outcome
            case .failure(let error): .retryable(error.message)
            }
        }
    }

    private func post(_ record: EventRecord) async -> Result<DeliveryOutcome, SinkConnectionError> {
        // Record fields become headers: one that no header may carry is this record's problem
        // (dead-lettered with the reason), never the connection's, so it cannot pin the sink.
        if let problem = Self.headerProblem([("id", "Idempotency-Key", record.id), ("workflowInstanceId", "X-Sinkd-Workflow-Instance-Id", record.workflowInstanceId),
                                             ("correlationId", "X-Sinkd-Correlation-Id", record.correlationId)]) {
            return .success(.permanent(problem))
        }
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in endpoint.headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "Idempotency-Key", value: record.id)
        request.headers.replaceOrAdd(name: "X-Sinkd-Message-Id", value: record.id)
        if let w = record.workflowInstanceId { request.headers.replaceOrAdd(name: "X-Sinkd-Workflow-Instance-Id", value: w) }
        if let c = record.correlationId { request.headers.replaceOrAdd(name: "X-Sinkd-Correlation-Id", value: c) }
        request.body = .bytes(record.payload)
        let timeout = TimeAmount.milliseconds(endpoint.timeout.milliseconds)
        do {
            let response = try await client.execute(request, timeout: timeout)
            let body = try? await response.body.collect(upTo: 4096)
            return .success(Self.outcome(status: response.status, headers: response.headers, body: body.map { String(buffer: $0) } ?? ""))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            return .success(.retryable("\(endpoint.url): no response within \(Units.formatDuration(endpoint.timeout))"))
        } catch {
            return .failure(SinkConnectionError("\(endpoint.url): \(error)"))
        }
    }

    /// Why one of these record fields cannot be sent as an HTTP header value (a control character
    /// other than HTAB, which RFC 9110 forbids and AsyncHTTPClient refuses), or nil.
    static func headerProblem(_ fields: [(field: String, header: String, value: String?)]) -> String? {
        for (field, header, value) in fields {
            guard let value else { continue }
            for (offset, byte) in value.utf8.enumerated() where (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                let code = String(byte, radix: 16, uppercase: true)
                return "the record's \(field) holds the control character U+\(code.count == 1 ? "000" : "00")\(code) at byte \(offset), which an HTTP header (\(header)) cannot carry"
            }
        }
        return nil
    }

    static func outcome(status: HTTPResponseStatus, headers: HTTPHeaders, body: String) -> DeliveryOutcome {
        let code = Int(status.code)
        let summary = "HTTP \(code) \(status.reasonPhrase)" + (body.isEmpty ? "" : ": \(body.prefix(200))")
        switch code {
        case 200..<300:
            return .delivered
        case 408, 429, 500..<600:
            let retryAfter = headers.first(name: "Retry-After").flatMap { Int64($0.trimmingWhitespaceLite) }.map { Duration.seconds($0) }
            return .retryable(summary, retryAfter: retryAfter)
        default:
            return .permanent(summary)
        }
    }

    func close() async {}
}

extension String {
    var trimmingWhitespaceLite: Substring {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
