// Taro: the entry and a page's tap handler, with Taro's typings (@tarojs/taro).
import Taro from '@tarojs/taro';
import PushHub from 'pushhub-miniprogram-sdk';

// `Taro` (its methods return promises and also take success/fail callbacks) stands in for `wx`.
export const pushhub = new PushHub({ appid: 'wx0123456789abcdef', server: 'https://push.example.com', wx: Taro });

// A class entry component's taroGlobalData ends up on getApp(), where pushhub-form finds the instance.
export const taroGlobalData = { pushhub };

export async function onTapNotify(): Promise<string> {
  const r = await pushhub.subscribe(['TEMPLATE_ID']);
  return r.ok ? Object.keys(r.data.credited).join(',') : r.error.code;
}
