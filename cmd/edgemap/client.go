package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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

func newClient(c *cli.Context) *client {
	return &client{
		base:  strings.TrimRight(c.String("api"), "/"),
		token: c.String("token"),
		http:  &http.Client{Timeout: 30 * time.Second},
	}
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
	req, err := http.NewRequest(method, cl.base+path, rd)
	if err != nil {
		return fmt.Errorf("--api: %w", err)
	}
	// Every write says JSON, a body or not: the API refuses writes of any
	// other type, which is what keeps web pages from sending them.
	if body != nil || method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.token)
	}
	resp, err := cl.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w (is `edgemap serve` running? see --api)", cl.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, api.MaxBody))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode >= 300 {
		var fe mapping.FieldError
		if json.Unmarshal(raw, &fe) == nil && fe.Msg != "" {
			if fe.Field == "" {
				return errors.New(fe.Msg)
			}
			return &fe
		}
		return fmt.Errorf("admin API: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("admin API answered something that is not JSON: %w", err)
	}
	return nil
}
