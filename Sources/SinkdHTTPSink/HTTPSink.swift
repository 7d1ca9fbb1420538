import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import SinkdCore
import SinkdDelivery

/// `http:NAME`: POSTs each message body to `sinks.http.endpoints.NAME` with the configured
/// headers plus `Idempotency-Key` and `X-Sinkd-Message-Id` (the record id). 2xx is delivered;
/// 408, 429 and 5xx are retried (Retry-After honoured); other 4xx are permanent. A connection
/// that cannot be made, no complete response (head and body) within the endpoint's timeout, and
/// a 3xx (redirects are not followed) pause the sink.
public final class HTTPSinkFamily: SinkFamily, Sendable {
    public let name = ConfigFamily.http
    let config: HTTPSinkConfig
    let client: HTTPClient

    public init(config: HTTPSinkConfig, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.config = config
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: max(1, config.options.poolSize))
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

    public func makeClient(
        for address: SinkAddress, options: PipelineOptions
    ) throws(SinkConnectionError) -> any SinkClient {
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
            var out = [Result<DeliveryOutcome, SinkConnectionError>](
                repeating: .success(.delivered), count: batch.count)
            for await (index, result) in group { out[index] = result }
            return out
        }
        // If no request got through to the server, the connection is the problem.
        if results.allSatisfy({ if case .failure = $0 { true } else { false } }), case .failure(let error) = results[0]
        {
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
        if let problem = Self.headerProblem([
            ("id", "Idempotency-Key", record.id),
            ("workflowInstanceId", "X-Sinkd-Workflow-Instance-Id", record.workflowInstanceId),
            ("correlationId", "X-Sinkd-Correlation-Id", record.correlationId),
        ]) {
            return .success(.permanent(problem))
        }
        var request = HTTPClientRequest(url: endpoint.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        for (name, value) in endpoint.headers { request.headers.replaceOrAdd(name: name, value: value) }
        request.headers.replaceOrAdd(name: "Idempotency-Key", value: record.id)
        request.headers.replaceOrAdd(name: "X-Sinkd-Message-Id", value: record.id)
        if let w = record.workflowInstanceId {
            request.headers.replaceOrAdd(name: "X-Sinkd-Workflow-Instance-Id", value: w)
        }
        if let c = record.correlationId { request.headers.replaceOrAdd(name: "X-Sinkd-Correlation-Id", value: c) }
        request.body = .bytes(record.payload)
        // One deadline for connecting, the head and the whole body (AsyncHTTPClient's own ends at
        // the head: a 200 whose body trickled held a pooled connection for ever).
        let deadline = ContinuousClock.now + endpoint.timeout
        let client = self.client
        let url = endpoint.url
        let timeout = TimeAmount(endpoint.timeout)
        let prepared = request
        do {
            let (status, headers, body) = try await withDeadline(deadline) {
                let response = try await client.execute(prepared, timeout: timeout)
                return (
                    response.status, response.headers, try await Self.read(response.body, keeping: Self.keptBodyBytes)
                )
            }
            if (300..<400).contains(Int(status.code)) {
                // The endpoint moved: a configuration matter, not the record's. Redirects are not
                // followed (a POST's body and Idempotency-Key would go to a host not configured).
                let location = headers.first(name: "Location").map { " to \($0.prefix(200))" } ?? ""
                return .failure(
                    SinkConnectionError(
                        "\(url): HTTP \(status.code) \(status.reasonPhrase)\(location): sinkd does not follow redirects; set the endpoint's url to where it points"
                    ))
            }
            return .success(Self.outcome(status: status, headers: headers, body: String(decoding: body, as: UTF8.self)))
        } catch
            where error is DeadlineExceeded || [.deadlineExceeded, .readTimeout].contains(error as? HTTPClientError)
        {
            return .failure(
                SinkConnectionError("\(url): no complete response within \(Units.formatDuration(endpoint.timeout))"))
        } catch {
            return .failure(SinkConnectionError("\(url): \(error)"))
        }
    }

    /// How much of a response body is kept (for the error message); the rest is read and dropped.
    static let keptBodyBytes = 4096

    /// Reads the whole body (so the connection can be used again) and keeps its first `keeping` bytes.
    static func read(_ body: HTTPClientResponse.Body, keeping: Int) async throws -> [UInt8] {
        var kept: [UInt8] = []
        for try await chunk in body where kept.count < keeping {
            kept.append(contentsOf: chunk.readableBytesView.prefix(keeping - kept.count))
        }
        return kept
    }

    /// Why one of these record fields cannot be sent as an HTTP header value (a control character
    /// other than HTAB, which RFC 9110 forbids and AsyncHTTPClient refuses), or nil.
    static func headerProblem(_ fields: [(field: String, header: String, value: String?)]) -> String? {
        for (field, header, value) in fields {
            guard let value else { continue }
            for (offset, byte) in value.utf8.enumerated() where (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                let code = String(byte, radix: 16, uppercase: true)
                return
                    "the record's \(field) holds the control character U+\(code.count == 1 ? "000" : "00")\(code) at byte \(offset), which an HTTP header (\(header)) cannot carry"
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
            let retryAfter = headers.first(name: "Retry-After").flatMap { Int64($0.trimmingWhitespaceLite) }.map {
                Duration.seconds($0)
            }
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
