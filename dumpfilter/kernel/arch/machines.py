"""Per-machine facts that are not address translation: names, ELF machine numbers, kexec system
calls, crashkernel= rules and the capture kernel's command line (peers.md §6.4, §6.5).

This is the one table where machine names live (with the ``Arch`` classes next to it); the kexec
loader, crashkernel= parser and utsname code look their machine up here instead of naming one.
"""
from __future__ import annotations

from ...record import dataclass

MiB = 1 << 20

# The capture kernel's command line (kdump-utils' gen-kdump-sysconfig.sh, read 2026-03: the per-machine
# KDUMP_COMMANDLINE_REMOVE and KDUMP_COMMANDLINE_APPEND of /etc/sysconfig/kdump). Removed: parameters that
# would take memory out of the small reservation (huge pages, CMA, swiotlb, a big log buffer) or hide the
# capture kernel's messages; added: one CPU, no cgroup memory accounting, no NUMA, no THP, no KFENCE pool,
# devices reset, reboot 10 s after a panic in the capture kernel.
CAPTURE_REMOVE = ("hugepages", "hugepagesz", "slub_debug", "quiet", "log_buf_len", "swiotlb", "cma", "hugetlb_cma",
                  "ignition.firstboot")
_REMOVE_NO_CMA = tuple(w for w in CAPTURE_REMOVE if w != "cma")  # powerpc keeps cma= (fadump uses it)
_ADD_TAIL = ("novmcoredd", "cma=0", "hugetlb_cma=0", "kfence.sample_interval=0")
CAPTURE_ADD = ("irqpoll", "maxcpus=1", "reset_devices") + _ADD_TAIL

# ELF e_machine values
EM_NONE = 0
EM_386 = 3
EM_S390 = 22
EM_PPC64 = 21
EM_ARM = 40
EM_X86_64 = 62
EM_AARCH64 = 183
EM_RISCV = 243
EM_LOONGARCH = 258


@dataclass(frozen=True)
class Machine:
    """One machine as ``uname -m`` names it."""

    uname: str
    e_machine: int
    kexec_file_load: int | None = None  # system call number; None: the machine has no such call
    kexec_load: int | None = None
    #: CONFIG_ARCH_HAS_GENERIC_CRASHKERNEL_RESERVATION: ,high/,low (and ,cma since 6.17) exist, and a
    #: plain crashkernel=X falls back above 4 GiB
    generic_crashkernel: bool = False
    crash_align: int = 2 * MiB  # CRASH_ALIGN of the reservation
    #: DEFAULT_CRASH_KERNEL_LOW_SIZE: "swiotlb" = max(swiotlb + 8M, 256M) (x86), else a size (0: none)
    low_default: str | int = 0
    distro_crashkernel: str | None = None  # kdump-utils' recommended crashkernel= for the machine
    #: parameters pykexec -p adds to the capture kernel's command line (a running value of the same
    #: name is replaced; one given with --append is kept)
    capture_add: tuple[str, ...] = CAPTURE_ADD
    #: parameter names pykexec -p drops from the reused running command line
    capture_remove: tuple[str, ...] = CAPTURE_REMOVE
    signed_char: bool = False  # C ``char`` is signed (printk escapes of bytes >= 0x80)
    #: the kernel file format pykexec loads: "bzImage", or "Image" (kexec/image.py; with
    #: kexec_load when the kernel has no kexec_file_load, kexec/kexec_load.py)
    kernel_format: str = ""
    #: CRASH_ADDR_LOW_MAX, where "low" crash memory ends, as words for messages
    crash_low_limit: str = "4G"
    crash_note: str = ""  # what pykdumpctl crashkernel adds about the machine's rules


def _power_add(cpus: str) -> tuple[str, ...]:
    return ("irqpoll", cpus, "noirqdistrib", "reset_devices", "cgroup_disable=memory", "numa=off",
            "udev.children-max=2", "ehea.use_mcs=0", "panic=10", "kvm_cma_resv_ratio=0", "transparent_hugepage=never",
            "novmcoredd", "hugetlb_cma=0", "kfence.sample_interval=0")


MACHINES: dict[str, Machine] = {m.uname: m for m in (
    Machine("x86_64", EM_X86_64, kexec_file_load=320, kexec_load=246, generic_crashkernel=True,
            crash_align=16 * MiB, low_default="swiotlb", distro_crashkernel="2G-64G:256M,64G-:512M",
            signed_char=True, kernel_format="bzImage",
            capture_add=("irqpoll", "nr_cpus=1", "reset_devices", "cgroup_disable=memory", "mce=off", "numa=off",
                         "udev.children-max=2", "panic=10", "acpi_no_memhotplug", "transparent_hugepage=never",
                         "nokaslr", "hest_disable", "pcie_ports=compat") + _ADD_TAIL),
    # arch/arm64/include/asm/crash_reserve.h: CRASH_ALIGN 2M (boot protocol), CRASH_ADDR_LOW_MAX the
    # end of the DMA zones (arm64_dma_phys_limit: 4G, less where ZONE_DMA is smaller, all of memory
    # without DMA zones); ,high/,low since 5.19, a plain crashkernel=X falls back above it since 6.2
    # cma=0: Debian's arm64 kernels reserve a 64M CMA area (CMA_SIZE_MBYTES) out of the capture kernel's
    # memory whenever it fits, which leaves a 112M crashkernel= too little to boot (Fedora's aarch64
    # KDUMP_COMMANDLINE_APPEND has cma=0 for the same reason)
    Machine("aarch64", EM_AARCH64, kexec_file_load=294, kexec_load=104, generic_crashkernel=True,
            low_default=128 * MiB, distro_crashkernel="2G-4G:256M,4G-64G:320M,64G-:576M", kernel_format="Image",
            capture_add=("irqpoll", "nr_cpus=1", "reset_devices", "cgroup_disable=memory", "udev.children-max=2",
                         "panic=10", "swiotlb=noforce") + _ADD_TAIL,
            crash_low_limit="the DMA limit",
            crash_note="the DMA limit is the end of ZONE_DMA32 (4G), lower where ZONE_DMA is smaller (e.g. 1G); "
                       "crashkernel=X,high/,low need Linux 5.19+, a plain X falls back above the limit only "
                       "since 6.2"),
    Machine("riscv64", EM_RISCV, kexec_file_load=294, kexec_load=104, generic_crashkernel=True,
            low_default=128 * MiB),
    Machine("loongarch64", EM_LOONGARCH, kexec_file_load=294, kexec_load=104, generic_crashkernel=True,
            low_default=128 * MiB),
    Machine("ppc64le", EM_PPC64, kexec_file_load=382, kexec_load=268,
            distro_crashkernel="2G-4G:384M,4G-16G:512M,16G-64G:1G,64G-128G:2G,128G-:4G",
            capture_remove=_REMOVE_NO_CMA, capture_add=_power_add("nr_cpus=16")),
    Machine("ppc64", EM_PPC64, kexec_file_load=382, kexec_load=268,
            capture_remove=_REMOVE_NO_CMA, capture_add=_power_add("maxcpus=1")),
    Machine("s390x", EM_S390, kexec_file_load=381, kexec_load=277, distro_crashkernel="2G-64G:256M,64G-:512M",
            capture_remove=CAPTURE_REMOVE[:6] + ("vmcp_cma", "cma", "hugetlb_cma", "prot_virt", "ignition.firstboot",
                                                 "zfcp.allow_lun_scan"),
            capture_add=("nr_cpus=1", "cgroup_disable=memory", "numa=off", "udev.children-max=2", "panic=10",
                         "transparent_hugepage=never", "novmcoredd", "vmcp_cma=0", "cma=0", "hugetlb_cma=0",
                         "kfence.sample_interval=0")),
    Machine("i686", EM_386, kexec_load=283, signed_char=True,
            capture_add=("irqpoll", "nr_cpus=1", "reset_devices", "numa=off", "udev.children-max=2", "panic=10",
                         "transparent_hugepage=never") + _ADD_TAIL),
    Machine("armv7l", EM_ARM, kexec_load=347),
)}

#: utsname.machine written into a dump header when the dump itself does not say (QEMU does the same)
UNAME_BY_EM = {EM_X86_64: "x86_64", EM_AARCH64: "aarch64", EM_386: "i686", EM_ARM: "arm", EM_RISCV: "riscv64",
               EM_S390: "s390x", EM_PPC64: "ppc64le"}


def machine(uname: str) -> Machine:
    """The facts of ``uname -m``; an unknown machine gets a record with no kexec calls."""
    m = MACHINES.get(uname)
    if m is None:
        return Machine(uname, EM_NONE, capture_add=(), capture_remove=())
    return m


def e_machine_of_uname(uname: bytes | str) -> int:
    """ELF e_machine of a utsname.machine string (0 if unknown)."""
    name = uname.decode("ascii", "replace") if isinstance(uname, bytes) else uname
    for em, un in UNAME_BY_EM.items():
        if un == name:
            return em
    m = MACHINES.get(name)
    return m.e_machine if m is not None else EM_NONE


#: size of an NT_PRSTATUS note's desc (struct elf_prstatus) per machine
PRSTATUS_SIZE = {336: EM_X86_64, 392: EM_AARCH64}


def machine_of_notes(notes: list) -> int:  # noqa: ANN001 - list[Note]; source.base imports this package
    """e_machine told by the size of the first CORE/NT_PRSTATUS note (0 if none or unknown)."""
    for n in notes:
        if n.name == b"CORE" and n.type == 1:
            return PRSTATUS_SIZE.get(len(n.desc), EM_NONE)
    return EM_NONE


def uname_of_e_machine(e_machine: int) -> str:
    return UNAME_BY_EM.get(e_machine, "")


def host() -> Machine:
    import platform

    return machine(platform.machine())
