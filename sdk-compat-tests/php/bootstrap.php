<?php
// Loads the unmodified pusher-http-php (`pusher/pusher-php-server`) and its dependencies the way
// an application without Composer would: Debian's Guzzle and PSR packages through their own
// autoloaders (include path /usr/share/php), then a PSR-4 autoloader for `Pusher\` -> the SDK's
// src/. The SDK directory comes from HERALD_PHP_SDK_DIR, which the suite (lib/php.mjs) always
// sets after finding it; nothing of the SDK is copied or changed.

declare(strict_types=1);

function compat_fail_bootstrap(string $why): void
{
    fwrite(STDERR, "pusher-http-php bootstrap: $why\n");
    exit(3);
}

$sdk = getenv('HERALD_PHP_SDK_DIR');
if ($sdk === false || $sdk === '' || !is_file("$sdk/src/Pusher.php")) {
    compat_fail_bootstrap('HERALD_PHP_SDK_DIR does not name the SDK (no src/Pusher.php in ' . var_export($sdk, true) . ')');
}

set_include_path(get_include_path() . PATH_SEPARATOR . '/usr/share/php');
foreach (['GuzzleHttp/autoload.php', 'Psr/Log/autoload.php'] as $autoload) {
    if (!stream_resolve_include_path($autoload)) {
        compat_fail_bootstrap("$autoload is missing: install Debian's php-guzzlehttp-guzzle php-guzzlehttp-psr7 " .
            'php-guzzlehttp-promises php-psr-http-message php-psr-http-client php-psr-log (sdk-compat-tests/setup.sh)');
    }
    require_once $autoload;
}

spl_autoload_register(function (string $class) use ($sdk): void {
    $prefix = 'Pusher\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = $sdk . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});

foreach (['curl', 'json', 'mbstring', 'sodium'] as $extension) {
    if (!extension_loaded($extension)) {
        compat_fail_bootstrap("the PHP extension $extension is not loaded (Debian: php-curl, php-mbstring; sodium is built in)");
    }
}

/**
 * A Pusher client for `$config` = {app_id, key, secret, host, port, scheme, path?,
 * encryption_master_key_base64?}, exactly as an application constructs one. `$client`: an optional
 * Guzzle client (the constructor's documented last argument), used to observe the requests.
 */
function compat_pusher(array $config, ?\GuzzleHttp\ClientInterface $client = null): \Pusher\Pusher
{
    $options = [
        'host' => (string) $config['host'],
        'port' => (int) $config['port'],
        'scheme' => $config['scheme'] ?? 'http',
        'useTLS' => ($config['scheme'] ?? 'http') === 'https',
    ];
    foreach (['path', 'encryption_master_key_base64', 'timeout'] as $optional) {
        if (isset($config[$optional])) {
            $options[$optional] = $config[$optional];
        }
    }
    return new \Pusher\Pusher((string) $config['key'], (string) $config['secret'], (string) $config['app_id'], $options, $client);
}
