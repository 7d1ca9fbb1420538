import Foundation
import SinkdCore

/// Where SQS credentials come from. I/O-free: chosen from the configuration, the environment and
/// the shared files alone (nothing is fetched here; `AWSCredentialProvider` fetches). First found
/// wins, in the order of the AWS SDK for Java's default chain (the one Conductor's own SQS
/// publisher uses):
///
/// 1. `sinks.sqs` access_key_id / secret_access_key / session_token, or `sinks.sqs.profile` (that
///    profile, ahead of the environment: the configuration chose it);
/// 2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
/// 3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (EKS IRSA), STS AssumeRoleWithWebIdentity;
/// 4. the profile (AWS_PROFILE, else `default`) of the shared credentials file
///    (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials) and config file (AWS_CONFIG_FILE or
///    ~/.aws/config): static keys, `role_arn` with `source_profile`, `credential_source` or
///    `web_identity_token_file`, or `credential_process`;
/// 5. container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI (ECS task roles,
///    EKS Pod Identity), with AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN;
/// 6. EC2 instance metadata, IMDSv2 only (AWS_EC2_METADATA_SERVICE_ENDPOINT, default
///    http://169.254.169.254; AWS_EC2_METADATA_DISABLED=true turns it off).
///
/// Not supported: SSO profiles (`sso_session`, `sso_start_url`): they are reported as such.
public enum SQSCredentials {
    /// One way to get credentials. Temporary ones (every case but `fixed`) carry an expiry and are
    /// fetched again before it.
    public indirect enum Source: Sendable, Equatable, CustomStringConvertible {
        case fixed(SigV4Signer.Credentials, origin: String)
        case webIdentity(roleARN: String, tokenFile: String, sessionName: String, origin: String)
        case assumeRole(
            roleARN: String, sessionName: String, externalID: String?, durationSeconds: Int?, source: Source,
            origin: String)
        case process(command: String, origin: String)
        case container(url: String, tokenFile: String?, token: String?)
        case instanceMetadata(endpoint: String)

        /// For the log: where the credentials come from, never a secret.
        public var description: String {
            switch self {
            case .fixed(_, let origin): return origin
            case .webIdentity(let role, let file, _, let origin):
                return "web identity (\(origin): role \(role), token file \(file))"
            case .assumeRole(let role, _, _, _, let source, let origin):
                return "assumed role \(role) (\(origin)), with credentials from \(source)"
            case .process(_, let origin): return "credential_process (\(origin))"
            case .container(let url, _, _): return "container credentials (\(url))"
            case .instanceMetadata(let endpoint): return "EC2 instance metadata, IMDSv2 (\(endpoint))"
            }
        }
    }

    /// The chain found nothing usable, or a profile is wrong: what, where, what to do.
    public struct ResolveError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    public static let defaultReadFile: @Sendable (String) -> String? = {
        try? String(contentsOfFile: $0, encoding: .utf8)
    }

    public static func resolve(
        config: SQSSinkConfig, environment: [String: String], readFile: (String) -> String? = defaultReadFile
    ) -> Result<Source, ResolveError> {
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if !config.accessKeyID.isEmpty, !config.secretAccessKey.isEmpty {
            return .success(
                .fixed(
                    .init(
                        accessKeyID: config.accessKeyID, secretAccessKey: config.secretAccessKey,
                        sessionToken: config.sessionToken.isEmpty ? nil : config.sessionToken),
                    origin: "sinks.sqs configuration"))
        }
        let files = SharedFiles(environment: environment, readFile: readFile)
        if !config.profile.isEmpty {  // chosen in the configuration: that profile, whatever the environment says
            guard files.hasProfile(config.profile) else {
                return .failure(
                    ResolveError(
                        "AWS profile \(config.profile) (sinks.sqs.profile) is in neither \(files.credentialsPath ?? "~/.aws/credentials") nor \(files.configPath ?? "~/.aws/config"): add it, or fix sinks.sqs.profile"
                    ))
            }
            return profile(config.profile, files: files, environment: environment, visited: [])
        }
        if let key = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") {
            return .success(
                .fixed(
                    .init(accessKeyID: key, secretAccessKey: secret, sessionToken: env("AWS_SESSION_TOKEN")),
                    origin: "environment (AWS_ACCESS_KEY_ID)"))
        }
        if let tokenFile = env("AWS_WEB_IDENTITY_TOKEN_FILE"), let role = env("AWS_ROLE_ARN") {
            return .success(
                .webIdentity(
                    roleARN: role, tokenFile: tokenFile,
                    sessionName: env("AWS_ROLE_SESSION_NAME") ?? defaultSessionName, origin: "environment"))
        }
        let profileName = env("AWS_PROFILE") ?? "default"
        if files.hasProfile(profileName) {
            return profile(profileName, files: files, environment: environment, visited: [])
        }
        if env("AWS_PROFILE") != nil {
            return .failure(
                ResolveError(
                    "AWS profile \(profileName) (AWS_PROFILE) is in neither \(files.credentialsPath ?? "~/.aws/credentials") nor \(files.configPath ?? "~/.aws/config"): add it, or set AWS_PROFILE to one that exists"
                ))
        }
        if let container = containerSource(environment) { return container }
        if env("AWS_EC2_METADATA_DISABLED")?.lowercased() == "true" {
            return .failure(
                ResolveError(
                    "no AWS credentials: set sinks.sqs.access_key_id and secret_access_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or a profile in ~/.aws/credentials or ~/.aws/config (instance metadata is off: AWS_EC2_METADATA_DISABLED=true)"
                ))
        }
        return .success(
            .instanceMetadata(endpoint: env("AWS_EC2_METADATA_SERVICE_ENDPOINT") ?? "http://169.254.169.254"))
    }

    static let defaultSessionName = "sinkd"

    /// The role chain of one profile: its own keys, or `role_arn` with where its source
    /// credentials come from (another profile, the environment, the container, the instance, or a
    /// web identity token), or a `credential_process`.
    static func profile(
        _ name: String, files: SharedFiles, environment: [String: String], visited: [String]
    ) -> Result<Source, ResolveError> {
        let values = files.profile(name)
        let origin = "profile \(name) in \(files.origins(of: name))"
        if visited.contains(name) {
            return .failure(
                ResolveError(
                    "AWS profile \(name): source_profile loops (\((visited + [name]).joined(separator: " -> "))): break the loop in ~/.aws/config"
                ))
        }
        if let role = values["role_arn"] {
            let sessionName = values["role_session_name"] ?? defaultSessionName
            let external = values["external_id"]
            let duration = values["duration_seconds"].flatMap(Int.init)
            if let tokenFile = values["web_identity_token_file"] {
                return .success(
                    .webIdentity(roleARN: role, tokenFile: tokenFile, sessionName: sessionName, origin: origin))
            }
            let source: Result<Source, ResolveError>
            if let sourceProfile = values["source_profile"] {
                guard files.hasProfile(sourceProfile) else {
                    return .failure(
                        ResolveError(
                            "AWS profile \(name): its source_profile \(sourceProfile) does not exist: add it, or fix source_profile"
                        ))
                }
                // A source profile's own role_arn is followed, except that a profile naming itself
                // uses its own keys (as the SDKs do).
                if sourceProfile == name {
                    guard let keys = staticKeys(values) else {
                        return .failure(
                            ResolveError(
                                "AWS profile \(name) is its own source_profile but has no aws_access_key_id / aws_secret_access_key"
                            ))
                    }
                    source = .success(.fixed(keys, origin: origin))
                } else {
                    source = profile(sourceProfile, files: files, environment: environment, visited: visited + [name])
                }
            } else if let credentialSource = values["credential_source"] {
                switch credentialSource {
                case "Environment":
                    guard let key = environment["AWS_ACCESS_KEY_ID"], !key.isEmpty,
                        let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty
                    else {
                        return .failure(
                            ResolveError(
                                "AWS profile \(name): credential_source Environment, but AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set"
                            ))
                    }
                    source = .success(
                        .fixed(
                            .init(
                                accessKeyID: key, secretAccessKey: secret,
                                sessionToken: environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }),
                            origin: "environment"))
                case "EcsContainer":
                    guard let container = containerSource(environment) else {
                        return .failure(
                            ResolveError(
                                "AWS profile \(name): credential_source EcsContainer, but AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI are not set"
                            ))
                    }
                    source = container
                case "Ec2InstanceMetadata":
                    source = .success(
                        .instanceMetadata(
                            endpoint: environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 }
                                ?? "http://169.254.169.254"))
                default:
                    return .failure(
                        ResolveError(
                            "AWS profile \(name): credential_source \(credentialSource) is not one of Environment, EcsContainer, Ec2InstanceMetadata"
                        ))
                }
            } else {
                return .failure(
                    ResolveError(
                        "AWS profile \(name) has role_arn but no source_profile, credential_source or web_identity_token_file: add one"
                    ))
            }
            return source.map {
                .assumeRole(
                    roleARN: role, sessionName: sessionName, externalID: external, durationSeconds: duration,
                    source: $0, origin: origin)
            }
        }
        if let keys = staticKeys(values) { return .success(.fixed(keys, origin: origin)) }
        if let command = values["credential_process"] { return .success(.process(command: command, origin: origin)) }
        if values["sso_session"] != nil || values["sso_start_url"] != nil {
            return .failure(
                ResolveError(
                    "AWS profile \(name) is an SSO profile, which sinkd does not support: use a role (role_arn with source_profile or credential_source), a web identity, or credential_process"
                ))
        }
        return .failure(
            ResolveError(
                "AWS profile \(name) has no credentials: add aws_access_key_id and aws_secret_access_key, role_arn with source_profile, or credential_process"
            ))
    }

    static func staticKeys(_ values: [String: String]) -> SigV4Signer.Credentials? {
        guard let key = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] else { return nil }
        return .init(accessKeyID: key, secretAccessKey: secret, sessionToken: values["aws_session_token"])
    }

    /// ECS task roles and EKS Pod Identity: a full URI, or a relative one on ECS's fixed address.
    static func containerSource(_ environment: [String: String]) -> Result<Source, ResolveError>? {
        func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        let url: String
        if let relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            url = "http://169.254.170.2" + (relative.hasPrefix("/") ? relative : "/" + relative)
        } else if let full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            guard isAllowedContainerURL(full) else {
                return .failure(
                    ResolveError(
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI \(full) must be https://, or http:// to a loopback address or to ECS's or EKS's credential endpoint (169.254.170.2, 169.254.170.23): credentials are never fetched in clear from elsewhere"
                    ))
            }
            url = full
        } else {
            return nil
        }
        return .success(
            .container(
                url: url, tokenFile: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
                token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN")))
    }

    /// The SDKs' rule for a full URI: https anywhere; http only to loopback or the ECS/EKS agents.
    static func isAllowedContainerURL(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host?.lowercased()
        else { return false }
        if scheme == "https" { return true }
        guard scheme == "http" else { return false }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        return bare == "localhost" || bare.hasPrefix("127.") || bare == "::1" || bare == "169.254.170.2"
            || bare == "169.254.170.23" || bare == "fd00:ec2::23"
    }

    /// The shared credentials file (`[name]` sections) and config file (`[profile name]`, and
    /// `[default]`); a key in the credentials file wins over the same key in the config file.
    struct SharedFiles {
        var credentialsPath: String?
        var configPath: String?
        var credentials: [String: [String: String]] = [:]
        var config: [String: [String: String]] = [:]

        init(environment: [String: String], readFile: (String) -> String?) {
            func env(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
            let home = env("HOME")
            credentialsPath = env("AWS_SHARED_CREDENTIALS_FILE") ?? home.map { $0 + "/.aws/credentials" }
            configPath = env("AWS_CONFIG_FILE") ?? home.map { $0 + "/.aws/config" }
            if let path = credentialsPath, let text = readFile(path) { credentials = Self.sections(text) }
            if let path = configPath, let text = readFile(path) {
                for (section, values) in Self.sections(text) {
                    if section == "default" {
                        config["default", default: [:]].merge(values) { _, new in new }
                    } else if section.hasPrefix("profile ") {
                        let name = section.dropFirst("profile ".count).trimmingCharacters(in: .whitespaces)
                        config[name, default: [:]].merge(values) { _, new in new }
                    }
                }
            }
        }

        func hasProfile(_ name: String) -> Bool { credentials[name] != nil || config[name] != nil }

        func profile(_ name: String) -> [String: String] {
            (config[name] ?? [:]).merging(credentials[name] ?? [:]) { _, fromCredentials in fromCredentials }
        }

        func origins(of name: String) -> String {
            [credentials[name] != nil ? credentialsPath : nil, config[name] != nil ? configPath : nil].compactMap { $0 }
                .joined(separator: " and ")
        }

        /// INI sections: `[name]`, `key = value`, `#`/`;` comments; keys lower-cased.
        static func sections(_ text: String) -> [String: [String: String]] {
            var out: [String: [String: String]] = [:]
            var section: String?
            for raw in text.split(whereSeparator: \.isNewline) {
                let line = raw.trimmingCharacters(in: .whitespaces)
                if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
                if line.hasPrefix("["), line.hasSuffix("]") {
                    let name = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                    section = name
                    out[name, default: [:]] = out[name] ?? [:]
                    continue
                }
                guard let section, let eq = line.firstIndex(of: "=") else { continue }
                let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
                out[section, default: [:]][key] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            }
            return out
        }
    }
}
