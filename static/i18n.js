// French and English strings. The language comes from ?lang=, else the browser's.
const STRINGS = {
  en: {
    title: 'Visio', lobbyHeading: 'Join a meeting', room: 'Room name', name: 'Your name',
    join: 'Join', camera: 'Camera', microphone: 'Microphone', cameraOn: 'Join with camera on',
    micOn: 'Join with microphone on', micLevel: 'Microphone level', preview: 'Camera preview',
    muteMic: 'Mute microphone', unmuteMic: 'Unmute microphone', muteCam: 'Turn camera off',
    unmuteCam: 'Turn camera on', share: 'Share screen', stopShare: 'Stop sharing', leave: 'Leave',
    chat: 'Chat', send: 'Send', message: 'Message', participants: 'Participants', you: 'you',
    muted: 'muted', cameraOff: 'camera off', speaking: 'speaking', quality: 'Connection quality',
    good: 'good', fair: 'fair', poor: 'poor', unknown: 'unknown', reconnecting: 'Reconnecting…',
    connecting: 'Connecting…', left: 'You left the meeting.', rejoin: 'Join again',
    screenOf: 'Screen of {name}', noDevice: 'No camera or microphone available',
    replaced: 'You joined from another window.', error: 'Error',
    mediaFailed: 'Your browser could not set up the media of this meeting. Join again, or try another browser.',
  },
  fr: {
    title: 'Visio', lobbyHeading: 'Rejoindre une réunion', room: 'Nom de la salle',
    name: 'Votre nom', join: 'Rejoindre', camera: 'Caméra', microphone: 'Micro',
    cameraOn: 'Rejoindre avec la caméra', micOn: 'Rejoindre avec le micro',
    micLevel: 'Niveau du micro', preview: 'Aperçu de la caméra', muteMic: 'Couper le micro',
    unmuteMic: 'Activer le micro', muteCam: 'Couper la caméra', unmuteCam: 'Activer la caméra',
    share: "Partager l'écran", stopShare: 'Arrêter le partage', leave: 'Quitter',
    chat: 'Discussion', send: 'Envoyer', message: 'Message', participants: 'Participants',
    you: 'vous', muted: 'micro coupé', cameraOff: 'caméra coupée', speaking: 'parle',
    quality: 'Qualité de connexion', good: 'bonne', fair: 'moyenne', poor: 'mauvaise',
    unknown: 'inconnue', reconnecting: 'Reconnexion…', connecting: 'Connexion…',
    left: 'Vous avez quitté la réunion.', rejoin: 'Rejoindre à nouveau',
    screenOf: 'Écran de {name}', noDevice: 'Aucune caméra ni aucun micro disponible',
    replaced: 'Vous avez rejoint depuis une autre fenêtre.', error: 'Erreur',
    mediaFailed: "Votre navigateur n'a pas pu établir les médias de cette réunion. Rejoignez-la à nouveau ou essayez un autre navigateur.",
  },
};

export function pickLanguage(search = location.search, navLang = navigator.language || 'en') {
  const asked = new URLSearchParams(search).get('lang');
  if (asked && STRINGS[asked]) return asked;
  return navLang.toLowerCase().startsWith('fr') ? 'fr' : 'en';
}

export const lang = pickLanguage();

export function t(key, vars = {}) {
  let text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  for (const [k, v] of Object.entries(vars)) text = text.replace(`{${k}}`, v);
  return text;
}

// Fill every [data-i18n] element's text and [data-i18n-label] element's aria-label.
export function translate(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.setAttribute('placeholder', t(el.dataset.i18nPlaceholder));
  }
}
