#!/bin/sh
# 99pydumpfile: final_action / failure_action for pykdumpctl capture in the capture initramfs
# (PYKDUMPCTL_ACTION_CMD). The initramfs has no systemd, so reboot(8) and poweroff(8), which are
# systemctl on most distributions, may not work here: the kernel's sysrq does, after a sync.
sync
case "$1" in
    reboot) echo 1 > /proc/sys/kernel/sysrq; echo b > /proc/sysrq-trigger ;;
    halt|poweroff) echo 1 > /proc/sys/kernel/sysrq; echo o > /proc/sysrq-trigger ;;
    shell) echo "pydumpfile: dropping to a shell (exit to reboot)"; sh -i < /dev/console > /dev/console 2>&1
           echo 1 > /proc/sys/kernel/sysrq; echo b > /proc/sysrq-trigger ;;
    *) echo "pydumpfile-action: unknown action $1" >&2; exit 1 ;;
esac
sleep 10
