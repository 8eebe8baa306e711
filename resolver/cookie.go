package resolver

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/dchest/siphash"
)

// DNS Cookies (RFC 7873) with the interoperable server cookie of RFC 9018:
//
//	server cookie = version 1 | 3 reserved bytes | timestamp (seconds, 32 bits) |
//	                SipHash-2-4(client cookie | version | reserved | timestamp | client IP, secret)
//
// Every server that shares the secret (a fleet behind one anycast address)
// makes and accepts the same cookies. A client that shows a valid server
// cookie has received an earlier answer at its address, so its address is
// not forged, and response rate limiting leaves it alone.

const (
	clientCookieLen = 8
	// serverCookieLen is the RFC 9018 version 1 server cookie. RFC 7873
	// allows 8 to 32 bytes; other lengths are not ours and so not valid.
	serverCookieLen = 16
	maxCookieLen    = clientCookieLen + 32
	cookieVersion   = 1
	cookieSecretLen = 16 // SipHash-2-4's 128-bit key

	// RFC 9018 section 4.3: a server cookie is valid for an hour and may
	// be up to five minutes ahead (another server's clock); after half an
	// hour the server hands out a new one.
	cookieMaxAge     = 3600
	cookieMaxAhead   = 300
	cookieRenewAfter = 1800
)

var (
	errCookieLength    = errors.New("cookie: option length is not 8 or 16..40 bytes")
	errCookieDuplicate = errors.New("cookie: more than one option")
)

// CookieSecrets are the keys server cookies are made and checked with: the
// first makes them, all check them, so that a fleet can roll to a new
// secret without invalidating the cookies clients hold (RFC 9018 section
// 5). Immutable once made; safe for concurrent use.
type CookieSecrets struct {
	keys [][2]uint64 // SipHash keys k0, k1 of each secret, current first
}

// NewCookieSecrets uses current to make cookies and current and previous to
// check them.
func NewCookieSecrets(current [cookieSecretLen]byte, previous ...[cookieSecretLen]byte) *CookieSecrets {
	s := &CookieSecrets{}
	for _, k := range append([][cookieSecretLen]byte{current}, previous...) {
		// SipHash reads its key as two little-endian words (RFC 9018
		// uses the reference implementation's byte order).
		s.keys = append(s.keys, [2]uint64{binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])})
	}
	return s
}

// ParseCookieSecrets reads a secret file: one secret per line as 32 hex
// digits, the one to make cookies with first, older ones still accepted
// after it; blank lines and lines starting with # are ignored.
func ParseCookieSecrets(text []byte) (*CookieSecrets, error) {
	var secrets [][cookieSecretLen]byte
	sc := bufio.NewScanner(bytes.NewReader(text))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		raw, err := hex.DecodeString(s)
		if err != nil || len(raw) != cookieSecretLen {
			return nil, fmt.Errorf("line %d: a cookie secret is %d hex digits (%d random bytes)", line, 2*cookieSecretLen, cookieSecretLen)
		}
		secrets = append(secrets, [cookieSecretLen]byte(raw))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(secrets) == 0 {
		return nil, errors.New("no secret in the file")
	}
	return NewCookieSecrets(secrets[0], secrets[1:]...), nil
}

// parseCookie checks the length of a COOKIE option (RFC 7873 section 5.2):
// a client cookie of 8 bytes, optionally followed by a server cookie of 8
// to 32. Anything else is FORMERR.
func parseCookie(body []byte) error {
	if n := len(body); n != clientCookieLen && (n < clientCookieLen+8 || n > maxCookieLen) {
		return errCookieLength
	}
	return nil
}

// cookieHash is the RFC 9018 hash of a server cookie for the client cookie,
// the 8 bytes of version, reserved and timestamp, and the client's
// address, with key k.
func cookieHash(k [2]uint64, client, header []byte, src netip.Addr) uint64 {
	var in [clientCookieLen + 8 + 16]byte
	n := copy(in[:], client)
	n += copy(in[n:], header)
	if src.Is4() {
		a := src.As4()
		n += copy(in[n:], a[:])
	} else {
		a := src.As16()
		n += copy(in[n:], a[:])
	}
	return siphash.Hash(k[0], k[1], in[:n])
}

// check classifies the COOKIE option body (length already checked) that
// src sent at now (Unix seconds), and reports whether the server cookie in
// it can be returned as it is: valid, made with the current secret, with
// zero reserved bytes and less than half an hour old.
func (s *CookieSecrets) check(body []byte, src netip.Addr, now uint32) (verdict int, reuse bool) {
	if len(body) == clientCookieLen {
		return cookieClientOnly, false
	}
	server := body[clientCookieLen:]
	if len(server) != serverCookieLen || server[0] != cookieVersion {
		return cookieInvalid, false
	}
	// Serial number arithmetic (RFC 1982), as RFC 9018 asks: the
	// timestamp wraps in 2106.
	age := int32(now - binary.BigEndian.Uint32(server[4:8]))
	if age > cookieMaxAge || age < -cookieMaxAhead {
		return cookieInvalid, false
	}
	var want [8]byte
	for i, k := range s.keys {
		binary.LittleEndian.PutUint64(want[:], cookieHash(k, body[:clientCookieLen], server[:8], src))
		if subtle.ConstantTimeCompare(want[:], server[8:]) == 1 {
			fresh := i == 0 && server[1]|server[2]|server[3] == 0 && age < cookieRenewAfter
			return cookieValid, fresh
		}
	}
	return cookieInvalid, false
}

// appendCookie appends the COOKIE option's body for a response to dst: the
// client cookie and a server cookie for src made at now with the current
// secret.
func (s *CookieSecrets) appendCookie(dst, client []byte, src netip.Addr, now uint32) []byte {
	dst = append(dst, client[:clientCookieLen]...)
	at := len(dst)
	dst = append(dst, cookieVersion, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, now)
	return binary.LittleEndian.AppendUint64(dst, cookieHash(s.keys[0], client[:clientCookieLen], dst[at:at+8], src))
}

// responseCookie is the COOKIE option body to answer body (a checked
// option from src) with, appended to dst: the option as received when its
// server cookie may be reused, else a new server cookie.
func (s *CookieSecrets) responseCookie(dst, body []byte, reuse bool, src netip.Addr, now uint32) []byte {
	if reuse {
		return append(dst, body...)
	}
	return s.appendCookie(dst, body, src, now)
}
