package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgemap/edgemap/cmd/edgemap/internal/api"
	"github.com/edgemap/edgemap/mapping"
)

// client talks to a name server's admin API for the CLI subcommands.
type client struct {
	base  string
	token string
	http  *http.Client
}

// defaultAPI is where `make run` and a default `serve` listen.
const defaultAPI = "http://127.0.0.1:8053"

// clientFlags are --api and --token as a subcommand takes them, after its
// name. They have no default and no environment variable of their own:
// left out, the global flag's value (its environment variable, then its
// default) applies.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "api", Usage: "admin API of the name server to manage, http://host:port (default: the global --api, $EDGEMAP_API, " + defaultAPI + ")"},
		&cli.StringFlag{Name: "token", Usage: "bearer token for the admin API (default: the global --token, $EDGEMAP_API_TOKEN)"},
	}
}

// clientSetting is --api or --token: given after the subcommand, else as
// the global flag, its environment variable or its default.
func clientSetting(c *cli.Context, name string) string {
	if v := c.String(name); v != "" {
		return v
	}
	// The parent's lookup finds the global flag (the subcommand's own
	// shadows it from c).
	if l := c.Lineage(); len(l) > 1 {
		return l[1].String(name)
	}
	return ""
}

// apiBase is the admin API's base URL from --api: http://host:port, or
// host:port, which means http.
func apiBase(raw string) (string, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", mapping.FieldErrorf("--api", "%q: want the admin API's URL, http://host:port (e.g. %s)", raw, defaultAPI)
	}
	return s, nil
}

func newClient(c *cli.Context) (*client, error) {
	base, err := apiBase(clientSetting(c, "api"))
	if err != nil {
		return nil, err
	}
	return &client{
		base:  base,
		token: clientSetting(c, "token"),
		http:  &http.Client{Timeout: 30 * time.Second},
	}, nil
}

// do sends body (if not nil) as JSON and decodes the answer into out (if
// not nil). An API error comes back as a *mapping.FieldError, so the CLI prints the
// same "field: what is wrong" the API said.
func (cl *client) do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	resp, err := cl.send(method, path, rd, body != nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxBody))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode >= 300 {
		return apiError(resp, raw)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API answered something that is not JSON: %w", err)
	}
	return nil
}

// send sends one request, with the token and the CLI's User-Agent.
func (cl *client) send(method, path string, body io.Reader, hasBody bool) (*http.Response, error) {
	req, err := http.NewRequest(method, cl.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("--api: %w", err)
	}
	// Every write says JSON, a body or not: the API refuses writes of any
	// other type, which is what keeps web pages from sending them.
	if hasBody || method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.token)
	}
	req.Header.Set("User-Agent", userAgent())
	resp, err := cl.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w (is `edgemap serve` running? see --api)", cl.base, err)
	}
	return resp, nil
}

// apiError is an API's error answer as the CLI prints it: the API's own
// "field: what is wrong" when it sent one.
func apiError(resp *http.Response, raw []byte) error {
	var fe mapping.FieldError
	if json.Unmarshal(raw, &fe) == nil && fe.Msg != "" {
		if fe.Field == "" {
			return errors.New(fe.Msg)
		}
		return &fe
	}
	return fmt.Errorf("admin API: %s: %s", resp.Status, bytes.TrimSpace(raw))
}

// download copies the answer to GET path into w, and fails unless all of
// it (Content-Length) arrived.
func (cl *client) download(path string, w io.Writer) (int64, error) {
	resp, err := cl.send(http.MethodGet, path, nil, false)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, apiError(resp, raw)
	}
	n, err := io.Copy(w, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, resp.ContentLength)
	}
	return n, err
}

// userAgent is what the CLI calls itself to the API, which records it in
// the event log beside the connection's address: its version and the
// local user and host, so that a shared token still tells who did what.
// Only the token vouches for it.
func userAgent() string {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("edgemap/%s (%s@%s)", readBuildInfo().Version, who, host)
}
