//! Requests as real softphones, Asterisk and SIPp send them (written for these tests, with
//! documentation addresses), shared by the unit tests and the property tests.

/// (who sends it, the datagram, the To user, the From user).
pub const REQUESTS: [(&str, &str, &str, &str); 6] = [
    ("Linphone", LINPHONE, "alice", "alice"),
    ("Zoiper", ZOIPER, "2001", "2001"),
    ("Bria", BRIA, "bob", "bob"),
    ("Asterisk", ASTERISK_INVITE, "+15551234567", "1000"),
    ("SIPp", SIPP_COMPACT, "carol", "carol"),
    ("MicroSIP", MICROSIP_V6, "dave", "dave"),
];

pub const LINPHONE: &str = "REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK.Xq3~b2Qkw;rport\r\n\
From: <sip:alice@pbx.example.com>;tag=aR2bnZ9qH\r\n\
To: sip:alice@pbx.example.com\r\n\
CSeq: 20 REGISTER\r\n\
Call-ID: 7Hh4S2e6Vx\r\n\
Max-Forwards: 70\r\n\
Supported: replaces, outbound, gruu, path\r\n\
Accept: application/sdp\r\n\
Accept: text/plain\r\n\
Contact: <sip:alice@192.168.1.23;transport=udp>;expires=3600;+sip.instance=\"<urn:uuid:3b1c5b8e-7a6d-4c1e-9f00-0a1b2c3d4e5f>\"\r\n\
Expires: 3600\r\n\
User-Agent: Linphone-Desktop/5.2.4 (debian) Debian GNU/Linux 12, Qt 5.15.8 LinphoneCore/5.3.0\r\n\
Content-Length: 0\r\n\
\r\n";

pub const ZOIPER: &str = "REGISTER sip:198.51.100.1;transport=UDP SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.7:48123;branch=z9hG4bK-524287-1---1f8c3d6e0a5b9c21;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:2001@10.0.0.7:48123;rinstance=9f8e7d6c5b4a3921;transport=UDP>\r\n\
To: <sip:2001@198.51.100.1;transport=UDP>\r\n\
From: <sip:2001@198.51.100.1;transport=UDP>;tag=0b1c2d3e\r\n\
Call-ID: ZjQ1MmM3ZDUxNDQ5NWY1YjE0ZmM0ZjA0Yzg3NzM4ZDU\r\n\
CSeq: 1 REGISTER\r\n\
Expires: 60\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n\
Supported: replaces, norefersub, extended-refer, timer, outbound, path\r\n\
User-Agent: Z 5.6.1 v2.10.20.3\r\n\
Allow-Events: presence, kpml, talk\r\n\
Content-Length: 0\r\n\
\r\n";

pub const BRIA: &str = "REGISTER sip:voip.example.org SIP/2.0\r\n\
Via: SIP/2.0/UDP 172.16.4.20:51234;branch=z9hG4bK-d8754z-6b2c1a0f9e8d7c6b-1---d8754z-;rport\r\n\
Max-Forwards: 70\r\n\
Contact: \"Bob Smith\" <sip:bob@172.16.4.20:51234;rinstance=e1f2a3b4c5d6e7f8>\r\n\
To: \"Bob Smith\"<sip:bob@voip.example.org>\r\n\
From: \"Bob Smith\"<sip:bob@voip.example.org>;tag=4a5b6c7d\r\n\
Call-ID: NmQ2ZTdmODlhYmNkZWYwMTIzNDU2Nzg5\r\n\
CSeq: 1 REGISTER\r\n\
Expires: 3600\r\n\
User-Agent: Bria 6 release 6.5.3 stamp 112233\r\n\
Content-Length: 0\r\n\
\r\n";

pub const ASTERISK_INVITE: &str = "INVITE sip:+15551234567@192.0.2.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.1:5060;rport;branch=z9hG4bKPj5a6b7c8d-1e2f-4a3b-9c8d-7e6f5a4b3c2d\r\n\
From: \"PBX\" <sip:1000@198.51.100.1>;tag=1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d\r\n\
To: <sip:+15551234567@192.0.2.10>\r\n\
Contact: <sip:asterisk@198.51.100.1:5060>\r\n\
Call-ID: 9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a\r\n\
CSeq: 4711 INVITE\r\n\
Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER\r\n\
Supported: 100rel, timer, replaces, norefersub\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
Max-Forwards: 70\r\n\
User-Agent: Asterisk PBX 22.2.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 67\r\n\
\r\n\
v=0\r\n\
o=- 1 3 IN IP4 198.51.100.1\r\n\
s=Asterisk\r\n\
c=IN IP4 198.51.100.1\r\n";

/// Compact header forms and bare-LF line endings, as SIPp scenarios are often written.
pub const SIPP_COMPACT: &str = "REGISTER sip:198.51.100.1 SIP/2.0\n\
v: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-0\n\
f: sipp <sip:carol@198.51.100.1>;tag=1\n\
t: sipp <sip:carol@198.51.100.1>\n\
i: 1-1234@203.0.113.10\n\
CSeq: 1 REGISTER\n\
m: sip:carol@203.0.113.10:5060;expires=120\n\
l: 0\n\
\n";

pub const MICROSIP_V6: &str = "REGISTER sip:[2001:db8::1] SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8:1::10]:5060;rport;branch=z9hG4bKPj0f1e2d3c4b5a\r\n\
Max-Forwards: 70\r\n\
From: <sip:dave@[2001:db8::1]>;tag=5a4b3c2d1e0f\r\n\
To: <sip:dave@[2001:db8::1]>\r\n\
Call-ID: 0a1b2c3d4e5f60718293a4b5c6d7e8f9\r\n\
CSeq: 11807 REGISTER\r\n\
User-Agent: MicroSIP/3.21.3\r\n\
Contact: <sip:dave@[2001:db8:1::10]:5060;ob>\r\n\
Expires: 300\r\n\
Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS\r\n\
Content-Length:  0\r\n\
\r\n";
