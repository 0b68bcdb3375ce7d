<?php
// pusher-http-php operations for the compat suite (the PHP counterpart of py/ops.py).
//
// Usage: php ops.php OP ARGS_JSON      (HERALD_PHP_SDK_DIR names the SDK; see bootstrap.php)
//
// ARGS_JSON is {"config": {...}, "config_overrides": {...}?, ...the op's arguments}; `config` is
// {app_id, key, secret, host, port, scheme, path?, encryption_master_key_base64?} and
// `config_overrides` is merged over it (a wrong secret, an unknown app id, the `path` option).
//
// Prints exactly one JSON object on stdout and exits 0:
//   {"ok": true,  "result": ..., "requests": [...]}
//   {"ok": false, "error": CLASS, "code": N, "message": TEXT, "requests": [...]}
// `result` is what the SDK call returned, JSON-encoded as PHP sees it (objects stay objects: an
// empty result object is `{}`, an associative array from get_object_vars an object too, a list
// an array). `error` is the exception class (Pusher\ApiErrorException with the HTTP status as
// `code` and the response body as `message`; Pusher\PusherException for the SDK's own checks;
// a PHP TypeError...). `requests` lists what went over the wire: {method, url, status}, recorded
// by a Guzzle history middleware on the client handed to the SDK's constructor; the SDK itself is
// used unmodified.
//
// `check` prints {"ok": true, "result": {"php": VERSION, "sdk": Pusher::$VERSION}}: the suite's
// preflight that the SDK and its dependencies load.

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';

use GuzzleHttp\Client;
use GuzzleHttp\HandlerStack;
use GuzzleHttp\Middleware;
use Pusher\Pusher;

function op_result(Pusher $p, string $op, array $a)
{
    switch ($op) {
        case 'trigger':
            return $p->trigger($a['channels'], $a['event'], $a['data'], $a['params'] ?? [], $a['already_encoded'] ?? false);
        case 'triggerBatch':
            return $p->triggerBatch($a['batch'], $a['already_encoded'] ?? false);
        case 'sendToUser':
            return $p->sendToUser($a['user_id'], $a['event'], $a['data']);
        case 'terminateUserConnections':
            return $p->terminateUserConnections($a['user_id']);
        case 'getChannels':
            return $p->getChannels($a['params'] ?? []);
        case 'getChannelInfo':
            return $p->getChannelInfo($a['channel'], $a['params'] ?? []);
        case 'getPresenceUsers':
            return $p->getPresenceUsers($a['channel']);
        case 'authorizeChannel':
            return json_decode($p->authorizeChannel($a['channel'], $a['socket_id'], $a['custom_data'] ?? null), true);
        case 'authorizePresenceChannel':
            return json_decode($p->authorizePresenceChannel($a['channel'], $a['socket_id'], $a['user_id'], $a['user_info'] ?? null), true);
        case 'authenticateUser':
            return json_decode($p->authenticateUser($a['socket_id'], $a['user_data']), true);
        case 'webhook':
            // `headers` as the receiver got them ({name: value}, names as sent), `body` raw.
            $webhook = $p->webhook($a['headers'], $a['body']);
            return ['time_ms' => $webhook->get_time_ms(), 'events' => $webhook->get_events()];
        case 'check':
            return ['php' => PHP_VERSION, 'sdk' => Pusher::$VERSION];
    }
    throw new InvalidArgumentException("unknown op $op");
}

function main(array $argv): void
{
    $history = [];
    $out = [];
    try {
        if (count($argv) !== 3) {
            throw new InvalidArgumentException('usage: php ops.php OP ARGS_JSON');
        }
        $args = json_decode($argv[2], true, 512, JSON_THROW_ON_ERROR);
        $config = array_merge($args['config'] ?? [], $args['config_overrides'] ?? []);
        $stack = HandlerStack::create();
        $stack->push(Middleware::history($history));
        $pusher = compat_pusher($config, new Client(['handler' => $stack, 'timeout' => 10]));
        $out = ['ok' => true, 'result' => op_result($pusher, $argv[1], $args)];
    } catch (\Throwable $error) {
        $out = [
            'ok' => false,
            'error' => get_class($error),
            'code' => $error->getCode(),
            'message' => $error->getMessage(),
        ];
    }
    $out['requests'] = array_map(function (array $entry): array {
        return [
            'method' => $entry['request']->getMethod(),
            'url' => (string) $entry['request']->getUri(),
            'library' => $entry['request']->getHeaderLine('X-Pusher-Library'),
            'status' => $entry['response'] ? $entry['response']->getStatusCode() : null,
        ];
    }, $history);
    echo json_encode($out, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION), "\n";
}

main($argv);
