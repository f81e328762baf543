"""A real OpenLDAP server (Debian's slapd) for the directory tests: its own
configuration, database and certificate (from ``chorus cert``) in a
temporary directory, LDAPS and plain LDAP (for the test's own changes with
ldapmodify) on free loopback ports, seeded with people and groups before it starts.
It stops with the test."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from chorus_node import chorus_bin, free_ports

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
LDAPMODIFY = shutil.which("ldapmodify") or "/usr/bin/ldapmodify"
SUFFIX = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PW = "directory-admin-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
READY_S = 20.0


def available() -> bool:
    return all(os.path.exists(p) for p in (SLAPD, SLAPADD, LDAPMODIFY))


def person(uid: str, name: str, password: str, *, title: str = "", department: str = "",
           office: str = "", skills: tuple[str, ...] = (), manager: str | None = None,
           disabled: bool = False, mail: str | None = None, photo: bytes = b"") -> str:
    """One inetOrgPerson entry as LDIF."""
    lines = [f"dn: uid={uid},{PEOPLE}", "objectClass: inetOrgPerson", f"uid: {uid}",
             f"cn: {name}", f"sn: {name.split()[-1]}", f"userPassword: {password}",
             f"mail: {mail or uid + '@example.com'}"]
    if title:
        lines.append(f"title: {title}")
    if department:
        lines.append(f"departmentNumber: {department}")
    if office:
        lines.append(f"physicalDeliveryOfficeName: {office}")
    lines += [f"description: {s}" for s in skills]
    if manager:
        lines.append(f"manager: uid={manager},{PEOPLE}")
    if disabled:
        lines.append("employeeType: disabled")
    if photo:
        lines.append("jpegPhoto:: " + base64.b64encode(photo).decode())
    return "\n".join(lines) + "\n"


def group(cn: str, members: list[str]) -> str:
    """One groupOfNames entry as LDIF; members are uids of people or, as
    ``cn=...``, other groups (nested)."""
    lines = [f"dn: cn={cn},{GROUPS}", "objectClass: groupOfNames", f"cn: {cn}"]
    for m in members:
        dn = f"{m},{GROUPS}" if m.startswith("cn=") else f"uid={m},{PEOPLE}"
        lines.append(f"member: {dn}")
    return "\n".join(lines) + "\n"


def member_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


class Slapd:
    def __init__(self, workdir: Path, entries: list[str]):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ldaps_port, self.ldap_port = free_ports(2)
        self.proc: subprocess.Popen | None = None
        certs = self.dir / "certs"
        subprocess.run([str(chorus_bin()), "cert", "ca", "--out", str(certs)], check=True,
                       capture_output=True)
        subprocess.run([str(chorus_bin()), "cert", "node", "--ca", str(certs), "--id", "ldap",
                        "--name", "localhost", "--out", str(certs)], check=True, capture_output=True)
        self.ca = certs / "ca.pem"
        (self.dir / "db").mkdir(exist_ok=True)
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
TLSCACertificateFile {certs}/ca.pem
TLSCertificateFile {certs}/ldap.pem
TLSCertificateKeyFile {certs}/ldap.key
database mdb
maxsize 268435456
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PW}
directory {self.dir}/db
access to attrs=userPassword by self read by anonymous auth by * none
access to * by * read
""")
        base = (f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
                f"o: Example\n\ndn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n\n"
                f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n")
        ldif = self.dir / "seed.ldif"
        ldif.write_text(base + "\n" + "\n".join(entries))
        subprocess.run([SLAPADD, "-f", str(self.conf), "-l", str(ldif)], check=True,
                       capture_output=True)
        self.password_file = self.dir / "bind.password"
        self.password_file.write_text(ADMIN_PW + "\n")

    @property
    def url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf), "-d", "0",
             "-h", f"ldaps://127.0.0.1:{self.ldaps_port}/ ldap://127.0.0.1:{self.ldap_port}/"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "slapd.log", "w"))
        deadline = time.monotonic() + READY_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, (self.dir / "slapd.log").read_text()
                assert time.monotonic() < deadline, "slapd did not start"
                time.sleep(0.05)  # slapd has no readiness signal but its port

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def modify(self, ldif: str) -> None:
        """Changes entries as an administrator would (ldapmodify)."""
        subprocess.run([LDAPMODIFY, "-x", "-H", f"ldap://127.0.0.1:{self.ldap_port}",
                        "-D", ADMIN_DN, "-w", ADMIN_PW], input=ldif, text=True, check=True,
                       capture_output=True)

    def config(self, sync_secs: int = 1) -> dict:
        """The node's [directory] section for this server."""
        return {"directory": {
            "url": self.url, "ca_file": str(self.ca), "bind_dn": ADMIN_DN,
            "bind_password_file": str(self.password_file), "user_base": PEOPLE,
            "disabled_filter": "(employeeType=disabled)", "sync_interval_secs": sync_secs,
            "group_base": GROUPS, "attr_photo": "jpegPhoto",
            "timeout_secs": 5,
        }}


def serving(workdir: Path, entries: list[str]):
    """A started slapd seeded with ``entries`` (a generator for fixtures:
    it stops when the test is done)."""
    import pytest
    if not available():
        pytest.fail("slapd and ldap-utils are required (scripts/deps installs them)")
    s = Slapd(workdir, entries)
    s.start()
    try:
        yield s
    finally:
        s.stop()


async def synced(node, *users: str, timeout: float = 20) -> None:
    """Waits until the directory's people are accounts (the sync is
    periodic: there is no event to wait for)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        names = node.cli("user", "list").stdout.split()
        if all(any(n.split("@")[0] == u for n in names) for u in users):
            return
        assert loop.time() < deadline, f"{users} never synchronized: {names}\n{node.log_tail()}"
        await asyncio.sleep(0.2)
