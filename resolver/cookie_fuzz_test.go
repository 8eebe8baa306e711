package resolver

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzCookie holds the cookie code to its promises for any option body,
// client address and time: parseCookie accepts exactly the lengths RFC 7873
// allows; check never panics on what parseCookie accepts; the cookie we
// make is 24 bytes, valid for its client and time, returned as it is for
// half an hour, and not valid for another address.
//
//	go test ./resolver -run '^$' -fuzz '^FuzzCookie$' -fuzztime 60s
func FuzzCookie(f *testing.F) {
	f.Add([]byte("\x24\x64\xc4\xab\xcf\x10\xc9\x57"), []byte{198, 51, 100, 100}, uint32(1559731985))
	f.Add(bytes.Repeat([]byte{1}, 24), []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint32(0xffffff00))
	f.Add(bytes.Repeat([]byte{1}, 40), []byte{127, 0, 0, 1}, uint32(0))
	f.Add([]byte{1, 2, 3}, []byte{}, uint32(7))
	secrets := NewCookieSecrets([16]byte{1, 2, 3}, [16]byte{4, 5, 6})
	f.Fuzz(func(t *testing.T, body, ip []byte, now uint32) {
		src, ok := netip.AddrFromSlice(ip)
		if !ok {
			src = netip.MustParseAddr("192.0.2.1")
		}
		src = src.Unmap()
		n := len(body)
		wantOK := n == 8 || (n >= 16 && n <= 40)
		if err := parseCookie(body); (err == nil) != wantOK {
			t.Fatalf("parseCookie(%d bytes) = %v", n, err)
		}
		if !wantOK {
			return
		}
		verdict, reuse := secrets.check(body, src, now)
		if verdict < cookieClientOnly || verdict > cookieValid || (reuse && verdict != cookieValid) {
			t.Fatalf("check: verdict %d reuse %v", verdict, reuse)
		}
		out := secrets.responseCookie(nil, body, reuse, src, now)
		if len(out) != clientCookieLen+serverCookieLen || !bytes.Equal(out[:8], body[:8]) {
			t.Fatalf("response cookie %x for %x", out, body)
		}
		if v, _ := secrets.check(out, src, now); v != cookieValid {
			t.Fatalf("our own cookie %x is not valid for %s at %d", out, src, now)
		}
		if v, again := secrets.check(out, src, now+cookieRenewAfter-1); !reuse && (v != cookieValid || !again) {
			t.Fatalf("the cookie %x made now is not reused within half an hour", out)
		}
		other := src.Next()
		if !other.IsValid() {
			other = src.Prev()
		}
		if v, _ := secrets.check(out, other, now); v == cookieValid {
			t.Fatalf("cookie %x for %s valid for %s", out, src, other)
		}
	})
}

// FuzzCookieSecrets: any secret file either parses into at least one
// secret or is refused with an error; never a panic.
//
//	go test ./resolver -run '^$' -fuzz '^FuzzCookieSecrets$' -fuzztime 60s
func FuzzCookieSecrets(f *testing.F) {
	f.Add([]byte("e5e973e5a6b2a43f48e7dc849e37bfcf\n"))
	f.Add([]byte("# fleet secret, rotated 2026-01-01\n445536bcd2513298075a5d379663c962\n\ndd3bdf9344b678b185a6f5cb60fca715\n"))
	f.Add([]byte("e5e973e5a6b2a43f48e7dc849e37bf\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, text []byte) {
		s, err := ParseCookieSecrets(text)
		if (s == nil) == (err == nil) {
			t.Fatalf("ParseCookieSecrets: %v and %v", s, err)
		}
		if s != nil && len(s.keys) == 0 {
			t.Fatal("parsed without a secret")
		}
	})
}
