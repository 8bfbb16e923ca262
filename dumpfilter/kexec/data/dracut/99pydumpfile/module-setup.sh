#!/bin/bash
# 99pydumpfile: pydumpfile and `pykdumpctl capture` in a capture initramfs.
# Installed into /usr/lib/dracut/modules.d by `pykdumpctl rebuild`, which runs dracut with
# -m "... pydumpfile"; PYDUMPFILE_PYKDUMPCTL says how to run pykdumpctl, PYDUMPFILE_KDUMP_CONF which
# kdump.conf to carry. Python comes as `pykdumpctl initrd-files` stages it: the interpreter, only the
# standard-library modules the capture path imports (compiled, in a zip), the package's .pyc and .so
# files; dracut's inst_binary adds the shared libraries of every ELF file.

check() {
    # only when asked for by name
    return 255
}

depends() {
    echo base fs-lib
    return 0
}

_pydumpfile_conf() {
    # the value of a kdump.conf directive (first one), e.g. _pydumpfile_conf sshkey
    sed -n "s/^[[:space:]]*$1[[:space:]]\+\([^#]*\).*/\1/p" "$2" | head -n 1 | sed 's/[[:space:]]*$//'
}

_pydumpfile_conf_file() {
    echo "${PYDUMPFILE_KDUMP_CONF:-/etc/kdump.conf}"
}

installkernel() {
    # extra_modules (kdump.conf): kernel modules the capture needs beyond what kernel-modules brings
    local conf mods
    conf=$(_pydumpfile_conf_file)
    [[ -f $conf ]] || return 0
    mods=$(_pydumpfile_conf extra_modules "$conf")
    # shellcheck disable=SC2086
    [[ -z $mods ]] || hostonly='' instmods $mods
    return 0
}

install() {
    local ctl conf stage src dest f key collector
    ctl=${PYDUMPFILE_PYKDUMPCTL:-pykdumpctl}
    conf=$(_pydumpfile_conf_file)
    stage=$(mktemp -d "${DRACUT_TMPDIR:-/tmp}/pydumpfile.XXXXXX") || return 1
    # shellcheck disable=SC2086
    if ! $ctl initrd-files --stage "$stage/root" --elf-list "$stage/elf"; then
        derror "pydumpfile: pykdumpctl initrd-files failed"
        rm -rf "$stage"
        return 1
    fi
    (cd "$stage/root" && find . -type f) | while read -r f; do
        inst_simple "$stage/root/${f#./}" "/${f#./}"
    done
    while read -r src dest; do
        inst_binary "$src" "$dest"
    done < "$stage/elf"
    rm -rf "$stage"

    if [[ -f $conf ]]; then
        inst_simple "$conf" /etc/kdump.conf
        key=$(_pydumpfile_conf sshkey "$conf")
        if grep -qE '^[[:space:]]*(ssh|nfs4?)[[:space:]]' "$conf"; then
            # dracut's network module brings interfaces up only when asked: DHCP on every interface (the
            # capture kernel's command line may add its own ip=); the pre-mount hook runs once they are up
            mkdir -p "$initdir/etc/cmdline.d"
            echo "rd.neednet=1 ip=dhcp" > "$initdir/etc/cmdline.d/99pydumpfile-network.conf"
        fi
        if grep -q '^[[:space:]]*ssh[[:space:]]' "$conf"; then
            inst_simple "${key:-/root/.ssh/kdump_id_rsa}"
            [[ -f /root/.ssh/known_hosts ]] && inst_simple /root/.ssh/known_hosts
            inst_multiple ssh scp
        fi
        # a core_collector other than pydumpfile (makedumpfile, cp …) and extra_bins must be in the initramfs
        collector=$(_pydumpfile_conf core_collector "$conf")
        collector=${collector%% *}
        [[ -z $collector || $collector == pydumpfile ]] || inst_multiple "$collector"
        # shellcheck disable=SC2046
        inst_multiple -o $(_pydumpfile_conf extra_bins "$conf")
    fi
    for d in pre.d post.d emergency.d; do
        [[ -d /etc/kdump/$d ]] && inst_dir "/etc/kdump/$d" && inst_multiple -o /etc/kdump/$d/*
    done
    inst_multiple sh mount umount mkdir sync cat rm mv dd sed
    # reboot, halt and poweroff are systemctl or absent (no init system installed); the action script uses sysrq
    inst_multiple -o reboot halt poweroff blkid ip mount.nfs mount.nfs4 dmesg cp
    inst_simple "$moddir/pydumpfile-action.sh" /usr/lib/pydumpfile/action
    inst_hook cmdline 99 "$moddir/pydumpfile-cmdline.sh"
    inst_hook pre-mount 90 "$moddir/pydumpfile-capture.sh"
}
