/// A VM as the operator defines it: hypervisor-neutral, so any guest can be plugged in.
public struct VMDefinition: Sendable, Hashable, Codable {
    /// How the VM boots.
    public enum Boot: Sendable, Hashable, Codable {
        /// Direct kernel boot.
        case kernel(kernel: String, initrd: String?, append: String)
        /// From its `disk`.
        case disk
    }

    /// A disk image attached as the VM's first virtio disk (snapshotted with it, DESIGN §6).
    public struct Disk: Sendable, Hashable, Codable {
        /// The image file.
        public var path: String
        /// `qcow2` or `raw`.
        public var format: String

        /// Creates a disk.
        public init(path: String, format: String) {
            self.path = path
            self.format = format
        }
    }

    /// CPU virtualisation.
    public enum Accelerator: String, Sendable, Hashable, Codable {
        /// Hardware virtualisation through /dev/kvm.
        case kvm
        /// QEMU's software emulation.
        case tcg
    }

    /// Whether `name` can name a VM (or a peer, a VIOLIN): 1–32 of A–Z a–z 0–9 . _ -, not starting with a dot,
    /// so it is safe as a file name wherever it ends up.
    public static func isValidName(_ name: String) -> Bool {
        let allowed = name.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-"
                || $0 == "_" || $0 == "."
        }
        return allowed && (1...32).contains(name.count) && !name.hasPrefix(".")
    }

    /// Unique name within the cluster.
    public var name: String
    /// The VIOLIN its NIC is attached to.
    public var violin: String
    /// The NIC's address.
    public var mac: MACAddress
    /// Guest RAM.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var vcpus: Int
    /// Kernel or disk.
    public var boot: Boot
    /// Its disk, if it has one (required to boot from disk).
    public var disk: Disk?
    /// Accelerator; `nil` means "kvm if /dev/kvm opens, else tcg", decided when the VM starts.
    public var accelerator: Accelerator?
    /// The MTU its NIC announces to the guest: its VIOLIN's (`Violin.mtu`), `nil` for none.
    public var mtu: Int?

    /// Creates a definition.
    public init(
        name: String,
        violin: String,
        mac: MACAddress,
        memoryMiB: Int,
        vcpus: Int,
        boot: Boot,
        disk: Disk? = nil,
        accelerator: Accelerator?,
        mtu: Int? = nil
    ) {
        self.name = name
        self.violin = violin
        self.mac = mac
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.boot = boot
        self.disk = disk
        self.accelerator = accelerator
        self.mtu = mtu
    }
}

extension MACAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let address = MACAddress(text) else {
            throw DecodingError.dataCorrupted(
                .init(codingPath: decoder.codingPath, debugDescription: "bad MAC \(text)")
            )
        }
        self = address
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }
}
