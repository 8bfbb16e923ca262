#!/bin/sh
# 99pydumpfile cmdline hook. In the capture kernel (/proc/vmcore exists) the root file system is never
# mounted: the pre-mount hook saves the dump and ends with final_action. dracut's init dies when no module
# claims root= ("No or empty root= argument", "Don't know how to handle 'root=...'"), and this initramfs has
# no rootfs-block module, so accept whatever root= says. A block-device dump target is waited for (dracut's
# wait_for_dev: the main loop goes on to pre-mount only once it exists).
[ -e /proc/vmcore ] || return 0
[ -n "$root" ] || root=pydumpfile-capture
rootok=1
# (plain sh: this initramfs has no head, awk or grep unless another module brings them)
if [ -f /etc/kdump.conf ]; then
    while read -r _pydumpfile_key _pydumpfile_dev _pydumpfile_rest; do
        case "$_pydumpfile_key" in
            ext[234] | xfs | btrfs | minix | raw)
                wait_for_dev "$(label_uuid_to_dev "$_pydumpfile_dev")"
                break
                ;;
        esac
    done < /etc/kdump.conf
fi
unset _pydumpfile_key _pydumpfile_dev _pydumpfile_rest
