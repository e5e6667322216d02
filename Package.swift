// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "vnsnap-peer",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vnsnap-peer", targets: ["vnsnap-peer"]),
        .library(name: "VNSnapCore", targets: ["VNSnapCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // C libraries through pkg-config.
        .systemLibrary(
            name: "CSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),

        // Small C shims for system calls Swift's Glibc module does not expose (sendmmsg).
        .target(name: "CVNSnapSys"),

        // Pure protocol logic: no sockets, no hypervisor, no database.
        .target(
            name: "VNSnapCore",
            dependencies: [],
            // The core is optimised in debug builds too: the test suite simulates thousands of SWIM members.
            swiftSettings: swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // libsodium wrappers: keyring, sealed datagrams, hashes.
        .target(
            name: "VNSnapCrypto",
            dependencies: ["CSodium", "VNSnapCore"],
            swiftSettings: swiftSettings
        ),
        // Hypervisor backends: QEMU over QMP.
        .target(
            name: "VNSnapHypervisor",
            dependencies: [
                "VNSnapCore",
                "CVNSnapSys",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The daemon's shells: config, switch I/O, control socket, service group.
        // Images: zstd, hashing and durable chunk files on the local disk (blocking: run off the event loops).
        .target(
            name: "VNSnapImage",
            dependencies: ["CZstd", "CSodium", "CVNSnapSys", "VNSnapCore"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "VNSnapPeer",
            dependencies: [
                "CVNSnapSys",
                "VNSnapCore",
                "VNSnapCrypto",
                "VNSnapHypervisor",
                "VNSnapImage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "vnsnap-peer",
            dependencies: [
                "CVNSnapSys",
                "VNSnapCore",
                "VNSnapCrypto",
                "VNSnapImage",
                "VNSnapPeer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "vnsnap-bench",
            dependencies: [
                "VNSnapCore",
                "VNSnapCrypto",
                "VNSnapImage",
                "VNSnapPeer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "tools/bench/Sources/vnsnap-bench",
            swiftSettings: swiftSettings
        ),

        // Issue 17: the decoders' fuzz harnesses (tools/fuzz builds them with libFuzzer; plainly built, `vnsnap-fuzz`
        // replays inputs and writes seeds, and VNSnapFuzzTests replays the checked-in corpora).
        .target(
            name: "VNSnapFuzz",
            dependencies: ["VNSnapCore", "VNSnapCrypto", "VNSnapHypervisor", "VNSnapImage", "VNSnapPeer"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "vnsnap-fuzz",
            dependencies: ["VNSnapFuzz"],
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "VNSnapCoreTests",
            dependencies: ["VNSnapCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VNSnapCryptoTests",
            dependencies: ["VNSnapCrypto", "VNSnapCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VNSnapImageTests",
            dependencies: ["VNSnapImage", "VNSnapCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VNSnapHypervisorTests",
            dependencies: ["VNSnapHypervisor", "VNSnapCore", "VNSnapImage"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VNSnapPeerTests",
            dependencies: [
                "VNSnapPeer", "VNSnapCore", "VNSnapCrypto", "VNSnapHypervisor", "VNSnapImage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "VNSnapFuzzTests",
            dependencies: ["VNSnapFuzz"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
