"""The seed's configuration, verbatim (MISSION.md, "Configuration"), for the tests."""

SEED_XML = r"""<?xml version="1.0" encoding="UTF-8"?>
<colinux>
    <block_device index="0" path="\DosDevices\c:\coLinux\root.img" enabled="true"></block_device>
    <block_device index="1" path="\DosDevices\c:\coLinux\swap.img" enabled="true"></block_device>
    <cofs_device index="0" path="\DosDevices\c:\" type="flat" enabled="true"></cofs_device>
    <bootparams>root=/dev/cobd0</bootparams>
    <initrd path="initrd.gz"></initrd>
    <image path="vmlinux"></image>
    <memory size="128"></memory>
    <network index="0" name="TAP-Win32" type="tap"></network>
</colinux>
"""

# After "colinux-daemon"; split as the Windows shell splits it.
SEED_LINE = (
    r"kernel=vmlinux mem=128 cobd0=root.img cobd1=swap.img cofs0=c:\ root=/dev/cobd0 "
    r'initrd=initrd.gz eth0=tuntap,"TAP-Win32"'
)
SEED_WORDS = SEED_LINE.split(" ")
