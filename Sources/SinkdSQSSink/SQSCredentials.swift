import Foundation
import SinkdCore

/// Where SQS credentials come from, first found wins: the config keys (which may be
/// `${credential:...}` references), then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
/// AWS_SESSION_TOKEN, then the shared credentials file (AWS_SHARED_CREDENTIALS_FILE or
/// ~/.aws/credentials; profile AWS_PROFILE or `default`). Not supported (yet): instance profiles
/// (IMDS), ECS task roles, web identity, SSO, credential_process.
public enum SQSCredentials {
    public struct Resolved: Sendable, Equatable {
        public var credentials: SigV4Signer.Credentials
        /// Where they came from, for the log (never the values).
        public var source: String
    }

    public static func resolve(config: SQSSinkConfig, environment: [String: String], readFile: (String) -> String? = { try? String(contentsOfFile: $0, encoding: .utf8) }) -> Resolved? {
        if !config.accessKeyID.isEmpty, !config.secretAccessKey.isEmpty {
            return Resolved(credentials: .init(accessKeyID: config.accessKeyID, secretAccessKey: config.secretAccessKey,
                                               sessionToken: config.sessionToken.isEmpty ? nil : config.sessionToken), source: "sinks.sqs configuration")
        }
        if let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty, let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty {
            let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
            return Resolved(credentials: .init(accessKeyID: key, secretAccessKey: secret, sessionToken: token), source: "environment (AWS_ACCESS_KEY_ID)")
        }
        let path = environment["AWS_SHARED_CREDENTIALS_FILE"].flatMap { $0.isEmpty ? nil : $0 }
            ?? environment["HOME"].map { $0 + "/.aws/credentials" }
        let profile = environment["AWS_PROFILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "default"
        if let path, let text = readFile(path), let found = sharedFileProfile(text, profile: profile) {
            return Resolved(credentials: found, source: "\(path) [\(profile)]")
        }
        return nil
    }

    /// The keys of one `[profile]` section of an AWS shared credentials (INI) file.
    static func sharedFileProfile(_ text: String, profile: String) -> SigV4Signer.Credentials? {
        var section = ""
        var values: [String: String] = [:]
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                continue
            }
            guard section == profile, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            values[key] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
        }
        guard let key = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] else { return nil }
        return .init(accessKeyID: key, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }
}
