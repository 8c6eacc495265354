// Who is logged in and what they may do (permissions come from /api/auth/me when the server lists them).
export const state = { user: null, permissions: null, cleanup: null };

export function can(permission) {
  return !state.permissions || state.permissions.has(permission);
}
