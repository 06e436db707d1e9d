package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls the hub's agent API for one member cluster.
type Client struct {
	// HubURL is the hub's external URL.
	HubURL string
	// Cluster is this member's name.
	Cluster string
	// HTTP carries the hub's CA; nil means http.DefaultClient.
	HTTP *http.Client
	// Token returns a service-account token of the agent with the hub URL
	// as audience (a projected token file, or the TokenRequest API).
	Token func(ctx context.Context) (string, error)
}

// StatusError is a non-2xx answer of the hub.
type StatusError struct {
	Code    int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub answered %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// IsStatus reports whether err is a hub answer with that status code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == code
}

// Join presents the join token and the cluster's JWKS.
func (c *Client) Join(ctx context.Context, req JoinRequest) error {
	return c.do(ctx, http.MethodPost, JoinPath, req, false)
}

// Report sends the cluster's anchors and JWKS, authenticated with the
// agent's service-account token.
func (c *Client) Report(ctx context.Context, r Report) error {
	return c.do(ctx, http.MethodPut, ReportPath, r, true)
}

func (c *Client) do(ctx context.Context, method, path string, body any, auth bool) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	u := strings.TrimSuffix(c.HubURL, "/") + APIPrefix + url.PathEscape(c.Cluster) + "/" + path
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if auth {
		tok, err := c.Token(ctx)
		if err != nil {
			return fmt.Errorf("getting the agent's token for the hub: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling the hub at %s: %w", c.HubURL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e Error
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	return &StatusError{Code: resp.StatusCode, Message: e.Error}
}
