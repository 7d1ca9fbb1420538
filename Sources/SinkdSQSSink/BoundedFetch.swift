import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import SinkdCore

/// How long each kind of request sinkd makes to AWS (or its stand-ins) may take, connecting,
/// the response head and the whole body together.
public struct AWSRequestTimeouts: Sendable, Equatable {
    /// SQS calls (SendMessageBatch, GetQueueUrl, CreateQueue).
    public var sqs: Duration = .seconds(30)
    /// STS (AssumeRole, AssumeRoleWithWebIdentity).
    public var sts: Duration = .seconds(30)
    /// The container credentials endpoint (ECS, EKS Pod Identity).
    public var container: Duration = .seconds(5)
    /// Each IMDSv2 request (token, role, credentials).
    public var instanceMetadata: Duration = .seconds(2)
    /// A credential_process run, start to exit (the AWS SDKs set none; 60 s as before).
    public var credentialProcess: Duration = .seconds(60)

    public init() {}
}

/// A request that did not end in a complete, small enough response.
struct FetchFailure: Error, CustomStringConvertible {
    var description: String
}

extension HTTPClient {
    /// `request` under one deadline covering connecting, the head and the whole body
    /// (AsyncHTTPClient's own deadline ends at the head: a body trickling in held the caller, and
    /// every caller sharing its fetch, for ever), the body capped at `maxBodyBytes`.
    func fetch(
        _ request: HTTPClientRequest, timeout: Duration, maxBodyBytes: Int
    ) async throws -> (status: Int, headers: HTTPHeaders, body: [UInt8]) {
        do {
            return try await withDeadline(ContinuousClock.now + timeout) {
                let response = try await self.execute(request, timeout: TimeAmount(timeout))
                var body: [UInt8] = []
                for try await chunk in response.body {
                    guard body.count + chunk.readableBytes <= maxBodyBytes else {
                        throw FetchFailure(description: "a response body larger than \(maxBodyBytes) bytes")
                    }
                    body.append(contentsOf: chunk.readableBytesView)
                }
                return (Int(response.status.code), response.headers, body)
            }
        } catch
            where error is DeadlineExceeded || [.deadlineExceeded, .readTimeout].contains(error as? HTTPClientError)
        {
            throw FetchFailure(description: "no complete response within \(Units.formatDuration(timeout))")
        }
    }
}
