<?php
// A customer's backend written with pusher-http-php, served by PHP's built-in web server
// (`php -S 127.0.0.1:PORT endpoint.php`, started by lib/php.mjs). pusher-js clients use it as
// their auth endpoints, and Herald sends it webhooks:
//
//   POST /pusher/auth       socket_id, channel_name (form, as pusher-js posts them): presence-
//                           channels with authorizePresenceChannel(user_id, user_info), others
//                           with authorizeChannel (a private-encrypted- channel gets its
//                           shared_secret); `deny=1` answers 403 as a backend refusing the user
//   POST /pusher/user-auth  socket_id (form): authenticateUser(socket_id, {id, user_info})
//   POST /pusher/webhook    Pusher::webhook(getallheaders(), body): 200 when it accepts, else 401
//   GET  /log               every request above, as JSON lines turned into a JSON array
//
// "Who is signed in" comes from the form (`user_id`, `user_info` as JSON), which the test's
// pusher-js puts there through channelAuthorization.params / userAuthentication.params: the
// stand-in for a session cookie. Configuration: HERALD_COMPAT_PHP_CONFIG (JSON, as ops.php's
// `config`) and HERALD_COMPAT_PHP_LOG (the log file), from the environment.

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';

$config = json_decode((string) getenv('HERALD_COMPAT_PHP_CONFIG'), true, 512, JSON_THROW_ON_ERROR);
$log_file = (string) getenv('HERALD_COMPAT_PHP_LOG');

function record(string $log_file, array $entry): void
{
    file_put_contents($log_file, json_encode($entry, JSON_UNESCAPED_SLASHES) . "\n", FILE_APPEND | LOCK_EX);
}

function answer(int $status, string $body, string $type = 'application/json'): void
{
    http_response_code($status);
    header("Content-Type: $type");
    echo $body;
}

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$method = $_SERVER['REQUEST_METHOD'];

if ($method === 'GET' && $path === '/log') {
    $lines = is_file($log_file) ? file($log_file, FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) : [];
    answer(200, '[' . implode(',', $lines) . ']');
    return;
}

if ($method !== 'POST') {
    answer(405, 'POST only', 'text/plain');
    return;
}

$entry = ['path' => $path, 'time_ms' => (int) floor(microtime(true) * 1000)];

try {
    if ($path === '/pusher/auth' || $path === '/pusher/user-auth') {
        // The webhook handler below is configured without the master key (see there); the auth
        // endpoint has it, so encrypted channels get their shared secret.
        $pusher = compat_pusher($config);
        $entry['form'] = $_POST;
        $user_info = isset($_POST['user_info']) ? json_decode($_POST['user_info'], true, 512, JSON_THROW_ON_ERROR) : null;
        if (($_POST['deny'] ?? '') === '1') {
            $entry['status'] = 403;
            record($log_file, $entry);
            answer(403, 'Forbidden', 'text/plain');
            return;
        }
        if ($path === '/pusher/user-auth') {
            $user_data = ['id' => (string) $_POST['user_id']];
            if ($user_info !== null) {
                $user_data['user_info'] = $user_info;
            }
            $body = $pusher->authenticateUser((string) $_POST['socket_id'], $user_data);
            $entry['call'] = 'authenticateUser';
        } elseif (strncmp((string) $_POST['channel_name'], 'presence-', 9) === 0) {
            $body = $pusher->authorizePresenceChannel(
                (string) $_POST['channel_name'],
                (string) $_POST['socket_id'],
                (string) $_POST['user_id'],
                $user_info
            );
            $entry['call'] = 'authorizePresenceChannel';
        } else {
            $body = $pusher->authorizeChannel((string) $_POST['channel_name'], (string) $_POST['socket_id']);
            $entry['call'] = 'authorizeChannel';
        }
        $entry['status'] = 200;
        $entry['response'] = json_decode($body, true);
        record($log_file, $entry);
        answer(200, $body);
        return;
    }

    if ($path === '/pusher/webhook') {
        // Without the master key: with one, webhook() would try to decrypt the (data-less)
        // channel_occupied of a private-encrypted- channel and throw (contract section 6, a
        // limitation of the SDK, not of the request).
        $hook_config = $config;
        unset($hook_config['encryption_master_key_base64']);
        $pusher = compat_pusher($hook_config);
        $headers = getallheaders();
        $body = file_get_contents('php://input');
        $entry['headers'] = $headers;
        $entry['body'] = $body;
        $webhook = $pusher->webhook($headers, $body);
        $entry['status'] = 200;
        $entry['webhook'] = ['time_ms' => $webhook->get_time_ms(), 'events' => $webhook->get_events()];
        record($log_file, $entry);
        answer(200, '{}');
        return;
    }

    $entry['status'] = 404;
    record($log_file, $entry);
    answer(404, 'no such endpoint', 'text/plain');
} catch (\Throwable $error) {
    $entry['status'] = $path === '/pusher/webhook' ? 401 : 500;
    $entry['error'] = get_class($error) . ': ' . $error->getMessage();
    record($log_file, $entry);
    answer($entry['status'], $entry['error'], 'text/plain');
}
