#!/bin/sh
# 99pydumpfile pre-mount hook: in the capture kernel (/proc/vmcore exists) save vmcore-dmesg.txt and the
# vmcore to the kdump.conf target with pykdumpctl capture, which then runs final_action (or
# failure_action); the root file system is never mounted.
[ -e /proc/vmcore ] || return 0 2>/dev/null || exit 0
echo "pydumpfile: pykdumpctl capture --config /etc/kdump.conf" > /dev/kmsg 2>/dev/null
# final_action / failure_action through the kernel's sysrq (no systemd here for reboot/poweroff)
PYKDUMPCTL_ACTION_CMD=/usr/lib/pydumpfile/action /usr/bin/pykdumpctl capture --config /etc/kdump.conf
# capture ends with final_action; should it come back, do not boot the old root in the capture kernel
/usr/lib/pydumpfile/action reboot
