<?php

/**
 * Understudy: Roundcube on top of an Understudy continuity server.
 *
 * - Before each IMAP login, names the user's own address to the server with
 *   ID ("x-originating-ip" ...) (RFC 2971; Roundcube's `preauth_ident`). Understudy
 *   believes it from hosts listed in its `auth.webmail_hosts` and counts failed logins
 *   against it, so one user (or a guesser) failing does not lock every webmail user out.
 * - Shows `understudy_login_hint` below the login form.
 *
 * Installed by contrib/roundcube/setup-debian.sh; settings come from
 * `understudy webmail print-config roundcube`.
 */
class understudy extends rcube_plugin
{
    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
        $this->add_hook('loginform_content', [$this, 'loginform_content']);
    }

    public function storage_connect($args)
    {
        // remote_addr() honours X-Forwarded-For only from `proxy_whitelist` hosts.
        $args['preauth_ident'] = ['x-originating-ip' => rcube_utils::remote_addr()];
        return $args;
    }

    public function loginform_content($args)
    {
        $hint = rcmail::get_instance()->config->get('understudy_login_hint');
        if (!empty($hint)) {
            $args['inputs']['understudy_hint'] = [
                'content' => html::p(['id' => 'understudy-login-hint', 'class' => 'hint'], rcube::Q($hint)),
            ];
        }
        return $args;
    }
}
